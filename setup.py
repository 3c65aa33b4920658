"""Packaging for tfmot_zip (Multi-Task Zipping for tf_keras / TFMOT)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-model-optimization==0.8.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
]

EXTRAS = {
    "tflite": ["ai-edge-litert==2.3.0"],
    "test": ["pytest==9.2.0", "hypothesis==6.170.15", "ai-edge-litert==2.3.0"],
}

setup(
    name="tfmot_zip",
    version="0.2.0",
    description="Multi-Task Zipping of tf_keras models, composable with TFMOT pruning and quantization",
    packages=find_packages(include=["tfmot_zip", "tfmot_zip.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tfmot-zip=tfmot_zip.cli:main"]},
)
