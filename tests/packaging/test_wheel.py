"""The wheel and sdist: metadata (name, version, dependency ranges, extras, entry point) and contents."""
from __future__ import annotations

import ast
import configparser
import email
import importlib
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.packaging

RUNTIME = {"tensorflow", "tf-keras", "tensorflow-model-optimization", "tensorflow-datasets", "numpy", "scipy", "tqdm"}
EXTRAS = {"tflite": {"ai-edge-litert"}, "report": {"matplotlib"}, "test": {"pytest", "hypothesis", "build"}}


def source_version(source: Path) -> str:
    """``__version__`` of tfmot_zip/__init__.py, which must be a string literal (read statically)."""
    for node in ast.parse((source / "tfmot_zip" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str), ast.dump(node)
            return node.value.value
    raise AssertionError("tfmot_zip/__init__.py assigns no __version__")


def wheel_file(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [p for p in archive.namelist() if p.endswith(f".dist-info/{name}")]
        return archive.read(path).decode()


def requirements(metadata) -> dict[str | None, dict[str, Requirement]]:
    """``{extra or None: {canonical name: requirement}}`` from Requires-Dist."""
    result: dict[str | None, dict[str, Requirement]] = {}
    for line in metadata.get_all("Requires-Dist"):
        requirement = Requirement(line)
        extra = None
        if requirement.marker is not None:
            extras = [e for e in EXTRAS if requirement.marker.evaluate({"extra": e})]
            assert len(extras) == 1, f"{line!r} is not tied to exactly one extra"
            extra = extras[0]
        result.setdefault(extra, {})[canonicalize_name(requirement.name)] = requirement
    return result


def test_name_version_and_python(built):
    metadata = email.message_from_string(wheel_file(built.wheel, "METADATA"))
    assert canonicalize_name(metadata["Name"]) == "tfmot-zip"
    assert metadata["Version"] == source_version(built.source) == importlib.import_module("tfmot_zip").__version__
    assert built.wheel.name.startswith(f"tfmot_zip-{metadata['Version']}-py3-none-any")
    assert metadata["Requires-Python"].startswith(">=3.")


def test_runtime_dependencies_are_ranges_not_pins(built):
    runtime = requirements(email.message_from_string(wheel_file(built.wheel, "METADATA")))[None]
    assert RUNTIME <= set(runtime), sorted(runtime)
    assert not {"ai-edge-litert", "matplotlib", "pytest"} & set(runtime), "optional packages leaked into the runtime"
    for name, requirement in runtime.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, f"{requirement} has no lower bound"
        assert not operators & {"==", "===", "~="}, f"{requirement} pins a version; pins belong in constraints.txt"
    # the stack the reproducible set-up uses (constraints.txt) satisfies the ranges
    assert runtime["tensorflow"].specifier.contains("2.21.0") and runtime["numpy"].specifier.contains("2.4.6")
    assert runtime["numpy"].specifier.contains("1.26.4")  # numpy 1.x: the oldest TensorFlow supported needs it


def test_extras(built):
    metadata = email.message_from_string(wheel_file(built.wheel, "METADATA"))
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    by_extra = requirements(metadata)
    for extra, needed in EXTRAS.items():
        assert needed <= set(by_extra[extra]), (extra, sorted(by_extra[extra]))
    # [test] pulls in the other extras, so the whole suite can run
    (self_reference,) = [r for r in by_extra["test"].values() if canonicalize_name(r.name) == "tfmot-zip"]
    assert {"tflite", "report"} <= self_reference.extras


def test_console_entry_point_resolves(built):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel_file(built.wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"tfmot-zip": "tfmot_zip.cli:main"}
    module, function = entry_points["console_scripts"]["tfmot-zip"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_wheel_holds_every_module_and_nothing_else(built):
    with zipfile.ZipFile(built.wheel) as archive:
        names = archive.namelist()
    package = {n for n in names if n.startswith("tfmot_zip/")}
    expected = {p.relative_to(built.source).as_posix() for p in (built.source / "tfmot_zip").rglob("*.py")}
    assert package == expected, {"missing": sorted(expected - package), "extra": sorted(package - expected)}
    assert "tfmot_zip/data/tfds_builder.py" in package
    subpackages = {p.parent.relative_to(built.source).as_posix() for p in (built.source / "tfmot_zip").rglob("__init__.py")}
    assert {"tfmot_zip/core", "tfmot_zip/export", "tfmot_zip/pam", "tfmot_zip/cli"} <= subpackages
    others = {n.split("/")[0] for n in names} - {"tfmot_zip"}
    assert len(others) == 1 and others.pop().endswith(".dist-info"), sorted({n.split("/")[0] for n in names})
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/", "scripts/"))]


def test_sdist_builds_the_same_package(built):
    with tarfile.open(built.sdist) as archive:
        names = archive.getnames()
        (pkg_info,) = [n for n in names if n.count("/") == 1 and n.endswith("/PKG-INFO")]
        metadata = email.message_from_bytes(archive.extractfile(pkg_info).read())
    top = pkg_info.split("/")[0]
    assert metadata["Version"] == source_version(built.source)
    assert f"{top}/pyproject.toml" in names and f"{top}/tfmot_zip/data/tfds_builder.py" in names
    assert not [n for n in names if n.startswith((f"{top}/tests/", f"{top}/benchmarks/"))]
