"""The worker's malloc thresholds (snakepit.worker._malloc), set once at its start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from snakepit.worker._malloc import MALLOC_ENV

_PROBE = "from snakepit.worker._malloc import tune_malloc; print(tune_malloc())"


def _tuned(env_value: str | None) -> str:
    # In a child process: the thresholds are process-wide.
    env = {k: v for k, v in os.environ.items() if k != MALLOC_ENV}
    if env_value is not None:
        env[MALLOC_ENV] = env_value
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_thresholds_are_set_where_mallopt_exists() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _tuned(None) == "True"


@pytest.mark.parametrize("value", ["0", "Off"])
def test_the_environment_leaves_malloc_alone(value: str) -> None:
    assert _tuned(value) == "False"
