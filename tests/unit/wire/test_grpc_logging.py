"""``import snakepit`` leaves ``os.environ`` alone; grpc is quieted where it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snakepit._wire._grpc_logging import QUIET, VARIABLE, quiet_environment

ROOT = str(Path(__file__).resolve().parents[3])

# Prints nothing but what differs in os.environ across the import, then makes
# a grpc channel (which, with GRPC_TRACE=api, logs at INFO what grpc's
# verbosity lets through).
_PROBE = """
import os, sys
before = dict(os.environ)
import {module}
after = dict(os.environ)
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
print(changed)
import grpc
grpc.insecure_channel("unix:/nonexistent-snakepit-probe").close()
"""


def probe(module: str, **extra: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env.update(PYTHONPATH=ROOT, GRPC_TRACE="api", **extra)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr


@pytest.mark.parametrize("module", ["snakepit", "snakepit.pool", "snakepit.worker"])
def test_importing_snakepit_leaves_the_environment_unchanged(module: str) -> None:
    changed, _ = probe(module)
    assert changed == "[]"


@pytest.mark.parametrize("module", ["snakepit.pool", "snakepit.worker"])
def test_grpc_imported_by_snakepit_logs_errors_only(module: str) -> None:
    _, stderr = probe(module)
    assert stderr == ""  # its INFO trace lines are not let through


def test_a_verbosity_the_user_set_is_theirs() -> None:
    changed, stderr = probe("snakepit.pool", GRPC_VERBOSITY="INFO")
    assert changed == "[]"
    assert "Log level INFO" in stderr  # grpc took the user's level


class TestQuietEnvironment:
    def test_it_adds_the_quiet_level(self) -> None:
        assert quiet_environment({"A": "1"}) == {"A": "1", VARIABLE: QUIET}

    def test_a_level_that_is_set_stays(self) -> None:
        assert quiet_environment({VARIABLE: "DEBUG"}) == {VARIABLE: "DEBUG"}

    def test_by_default_it_is_a_copy_of_this_processs(self) -> None:
        quiet = quiet_environment()
        assert quiet[VARIABLE] == os.environ.get(VARIABLE, QUIET)
        assert {k: v for k, v in quiet.items() if k != VARIABLE} == {
            k: v for k, v in os.environ.items() if k != VARIABLE
        }
        assert quiet is not os.environ
