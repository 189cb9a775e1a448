"""``import snakepit`` leaves ``os.environ`` alone; grpc is quieted where it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snakepit._wire._grpc_logging import QUIET, VARIABLE, quiet_environment

ROOT = str(Path(__file__).resolve().parents[3])

# Prints nothing but the keys of os.environ written during the import (even
# if put back) or changed across it, then makes a grpc channel (which, with
# GRPC_TRACE=api, logs at INFO what grpc's verbosity lets through).
_PROBE = """
import os, sys
written = set()
class Recording(type(os.environ)):
    def __setitem__(self, key, value):
        written.add(key)
        super().__setitem__(key, value)
    def __delitem__(self, key):
        written.add(key)
        super().__delitem__(key)
os.environ.__class__ = Recording
before = dict(os.environ)
{code}
after = dict(os.environ)
written |= {{k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}}
print(sorted(written))
import grpc
grpc.insecure_channel("unix:/nonexistent-snakepit-probe").close()
"""

# What snakepit.testing's leak check does first on asyncio (warm_grpc=True).
_HOLD_GRPC = """
import asyncio
from snakepit.testing._leaks import _hold_grpc
async def hold():
    await _hold_grpc().close()
asyncio.run(hold())
"""


def probe(module: str, code: str = "", **extra: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env.update(PYTHONPATH=ROOT, GRPC_TRACE="api", **extra)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code or f"import {module}")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr


#: Each a first import of grpc (the generated stubs' before: not quieted).
GRPC_FIRST = [
    "snakepit.pool",
    "snakepit.worker",
    "snakepit._wire._proto.snakepit.v1.worker_pb2_grpc",
]


@pytest.mark.parametrize("module", GRPC_FIRST)
def test_grpc_imported_by_snakepit_logs_errors_only_and_writes_no_environment(
    module: str,
) -> None:
    # Each probe imports snakepit first: ``import snakepit`` writes nothing either.
    # Before: GRPC_VERBOSITY was in os.environ for the length of grpc's
    # import, seen by any other thread then (and put in its children's env).
    written, stderr = probe(module)
    assert written == "[]"
    assert stderr == ""  # its INFO trace lines are not let through


def test_the_leak_checks_grpc_logs_errors_only() -> None:
    # Before: warm_grpc=True imported grpc itself, at grpc's INFO.
    written, stderr = probe("", code=_HOLD_GRPC)
    assert written == "[]"
    assert stderr == ""


def test_the_worker_side_environment_still_says_error() -> None:
    before = dict(os.environ)
    assert quiet_environment({})[VARIABLE] == QUIET
    assert dict(os.environ) == before


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
