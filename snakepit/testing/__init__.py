"""Test helpers for code that uses snakepit (the Supertester-style harness).

For now this holds :mod:`snakepit.testing.adapters`, ready-made adapters for
tests (Echo, Hang, Crash, SlowStart, FaultInjecting). The pytest plugin and
the assertion helpers come with the testing-harness issue. Importing this
package stays cheap: adapters run inside worker processes.
"""

__all__ = ()
