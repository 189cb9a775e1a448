"""snakepit.testing: the Supertester-style harness for code built on snakepit.

Deterministic tests of concurrent, supervised code: assertions and waits on
servers and supervisors (``assert_child_count``, ``assert_process_restarted``,
``cast_and_sync``, ``trace_supervision``...), chaos helpers driven by a
seeded rng, leak checks, worker and stream helpers, and a pytest plugin
(fixtures ``otp_sandbox``, ``chaos_rng``, ``snakepit_pool``...). See
``docs/testing.md``. :mod:`snakepit.testing.adapters` holds ready-made
adapters for tests (Echo, Hang, Crash, SlowStart, FaultInjecting,
DirectedFaults, Gated).

The helpers are imported on first use: adapters run inside worker
processes, which import this package and must not pay for (or import) the
host side.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The modules whose ``__all__`` this package re-exports, on first use.
_MODULES = ("_otp", "_chaos", "_scenario", "_leaks", "_workers", "_measure", "_plugin")


def _names() -> dict[str, str]:
    names: dict[str, str] = {}
    for module in _MODULES:
        for name in importlib.import_module(f"{__name__}.{module}").__all__:
            names[name] = module
    return names


#: Fixture names that are not importable, and what to use instead.
_FIXTURES_ONLY = {
    "chaos_rng": "a pytest fixture: take it as a test argument; outside pytest, "
    "make_chaos_rng(base_seed, test_id) makes the same generator",
}


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return tuple(sorted(_names()))
    module = _names().get(name)
    if module is None:
        hint = _FIXTURES_ONLY.get(name)
        if hint is not None:
            raise AttributeError(f"{__name__}.{name} is {hint}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next time, a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_names()})
