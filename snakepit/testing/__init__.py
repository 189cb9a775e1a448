"""snakepit.testing: the Supertester-style harness for code built on snakepit.

Deterministic tests of concurrent, supervised code: assertions and waits on
servers and supervisors (``assert_child_count``, ``assert_process_restarted``,
``cast_and_sync``, ``trace_supervision``...), chaos helpers driven by a
seeded rng, leak checks, worker, stream and session helpers
(``cleanup_sessions``, ``assert_no_sessions``), and a pytest plugin
(fixtures ``otp_sandbox``, ``chaos_rng``, ``snakepit_pool``...). See
``docs/testing.md``. :mod:`snakepit.testing.adapters` holds ready-made
adapters for tests (Echo, Sessions, Hang, Crash, SlowStart, FaultInjecting,
DirectedFaults, Gated).

The helpers are imported on first use: adapters run inside worker
processes, which import this package and must not pay for (or import) the
host side. Type checkers see every name at once, through the
``TYPE_CHECKING`` imports below (a test keeps them equal to the lazy ones).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, imported at once, for type checkers
    from ._calls import CallMonitor as CallMonitor
    from ._calls import CallRecord as CallRecord
    from ._calls import monitor_call as monitor_call
    from ._crashes import ChaosReport as ChaosReport
    from ._crashes import ChildKill as ChildKill
    from ._crashes import InjectedCrash as InjectedCrash
    from ._crashes import chaos_kill_children as chaos_kill_children
    from ._crashes import inject_crash as inject_crash
    from ._exhaust import Exhaustion as Exhaustion
    from ._exhaust import exhaust as exhaust
    from ._faults import FaultReport as FaultReport
    from ._faults import inject_random_failures as inject_random_failures
    from ._leaks import LeakCheck as LeakCheck
    from ._leaks import LeakOptions as LeakOptions
    from ._leaks import assert_no_leaks as assert_no_leaks
    from ._leaks import child_pids as child_pids
    from ._leaks import describe_process as describe_process
    from ._leaks import wait_exited as wait_exited
    from ._measure import Measurement as Measurement
    from ._measure import measure as measure
    from ._plugin import OTPSandbox as OTPSandbox
    from ._plugin import PoolEvents as PoolEvents
    from ._plugin import SandboxWarning as SandboxWarning
    from ._resilience import ChaosOutcome as ChaosOutcome
    from ._resilience import ChaosScenario as ChaosScenario
    from ._resilience import ChaosSuiteReport as ChaosSuiteReport
    from ._resilience import assert_chaos_resilient as assert_chaos_resilient
    from ._resilience import run_chaos_suite as run_chaos_suite
    from ._restarts import Recovery as Recovery
    from ._restarts import assert_process_restarted as assert_process_restarted
    from ._restarts import check_crash_recovery as check_crash_recovery
    from ._restarts import wait_for_restart as wait_for_restart
    from ._scenario import GenServerMachine as GenServerMachine
    from ._scenario import Scenario as Scenario
    from ._scenario import ScenarioResult as ScenarioResult
    from ._scenario import run_scenario as run_scenario
    from ._seeds import chaos_seed as chaos_seed
    from ._seeds import make_chaos_rng as make_chaos_rng
    from ._servers import StressOp as StressOp
    from ._servers import StressReport as StressReport
    from ._servers import assert_alive as assert_alive
    from ._servers import assert_dead as assert_dead
    from ._servers import assert_handles as assert_handles
    from ._servers import assert_responsive as assert_responsive
    from ._servers import assert_state as assert_state
    from ._servers import cast_and_sync as cast_and_sync
    from ._servers import concurrent_calls as concurrent_calls
    from ._servers import get_state as get_state
    from ._servers import stress as stress
    from ._sessions import assert_no_sessions as assert_no_sessions
    from ._sessions import cleanup_sessions as cleanup_sessions
    from ._supervision import TreeSpec as TreeSpec
    from ._supervision import assert_all_children_alive as assert_all_children_alive
    from ._supervision import assert_child_count as assert_child_count
    from ._supervision import assert_strategy as assert_strategy
    from ._supervision import assert_tree as assert_tree
    from ._supervision import check_restart_strategy as check_restart_strategy
    from ._supervision import wait_stable as wait_stable
    from ._tracing import MessageLog as MessageLog
    from ._tracing import SupervisionLog as SupervisionLog
    from ._tracing import TracedMessage as TracedMessage
    from ._tracing import trace_messages as trace_messages
    from ._tracing import trace_supervision as trace_supervision
    from ._workers import PythonWorker as PythonWorker
    from ._workers import assert_healthy as assert_healthy
    from ._workers import assert_streaming_response as assert_streaming_response
    from ._workers import python_worker as python_worker

#: The modules whose ``__all__`` this package re-exports, on first use.
_MODULES = (
    "_servers",
    "_restarts",
    "_supervision",
    "_tracing",
    "_calls",
    "_seeds",
    "_crashes",
    "_exhaust",
    "_resilience",
    "_faults",
    "_scenario",
    "_leaks",
    "_workers",
    "_measure",
    "_sessions",
    "_plugin",
)


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
