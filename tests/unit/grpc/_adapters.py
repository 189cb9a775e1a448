"""Adapters for the worker's own tests (imported inside worker processes)."""

from __future__ import annotations

from snakepit.worker import Adapter, tool


class BadSetup(Adapter):
    def setup(self) -> None:
        raise RuntimeError("the model file is missing")


class AsyncSetup(Adapter):
    async def setup(self) -> None:
        self.ready = "yes"

    @tool
    async def ready_flag(self) -> str:
        """Return what setup() stored."""
        return self.ready


class NotAnAdapter:
    pass


class Typed(Adapter):
    @tool(name="scale")
    def scale_values(
        self, values: list[float], factor: float = 2.0, label: str | None = None
    ) -> list[float]:
        """Multiply every value by factor.

        A second paragraph.
        """
        return [v * factor for v in values]


from snakepit.testing.adapters import Crash, Gated, Hang  # noqa: E402


class All(Hang, Crash, Gated):
    """Every test tool in one adapter."""


class FailsWhenFlagged(All):
    """Starts normally until the file named by SNAKEPIT_TEST_FAIL_FLAG exists."""

    def setup(self) -> None:
        import os

        flag = os.environ.get("SNAKEPIT_TEST_FAIL_FLAG", "")
        if flag and os.path.exists(flag):
            raise RuntimeError("flagged to fail at start")

    @tool
    def exit_once(self, flag: str) -> str:
        """Crash this worker the first time (creating ``flag``); answer "ok" after."""
        import os

        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(1)
        return "ok"
