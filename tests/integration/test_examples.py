"""The README's `make demo` runs to its end (it once hung: a worker killed before
its call started sends the call elsewhere, so the demo must kill a call that runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_pool_demo_runs_to_its_end() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pool_demo.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "the caller got WorkerCrashed" in out
    assert "ExecutionTimeout" in out
    assert "calls by outcome" in out
