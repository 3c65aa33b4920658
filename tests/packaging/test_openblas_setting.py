"""Importing tfmot_zip asks OpenBLAS pools loaded afterwards to stop busy-waiting at once (see the
package docstring's comment), and leaves a value the user set alone."""
import os
import subprocess
import sys

import pytest

SCRIPT = (
    "import os, sys; before = os.environ.get('OPENBLAS_THREAD_TIMEOUT'); import tfmot_zip; "
    "print(before, os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
)


@pytest.mark.parametrize("user_value, expected", [(None, "None 4"), ("12", "12 12")])
def test_the_thread_timeout_defaults_to_sleeping_at_once_and_a_user_value_stays(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected
