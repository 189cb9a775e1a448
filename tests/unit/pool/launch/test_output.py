"""Worker output on the host (pool/_launch/_output.py): lines cut, redraws collapsed, logs capped.

What real workers print, and a grandchild holding their pipes, is in
tests/integration/test_worker_output.py.
"""

from __future__ import annotations

import logging
from collections import deque

from snakepit.pool._launch._output import LOG_BURST, MAX_LINE, OutputLines


class Records(logging.Handler):
    """Keeps every record it gets."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_lines_are_cut_redraws_collapsed_and_logging_is_rate_bounded() -> None:
    # The host's side alone: whatever arrives, memory and log volume stay bounded.
    tail: deque[str] = deque(maxlen=5)
    logged = Records()
    logger = logging.getLogger("snakepit.worker.unit-test")
    logger.addHandler(logged)
    logger.propagate = False
    try:
        lines = OutputLines(tail, logger)
        lines.feed(b"a" * (MAX_LINE + 10) + b"\n")
        assert tail[-1] == "a" * MAX_LINE + " [... 10 more bytes cut]"
        for chunk in (b"\r 10%", b"\r 50%\r", b"\n", b"x\r", b"\ny\r\r\rz", b"\xff\n"):
            lines.feed(chunk)
        assert list(tail)[-3:] == [" 50%", "x", "z\ufffd"]
        lines.feed(b"line\n" * 100_000)  # at once: far over the rate
        lines.feed(b"end")
        lines.close()
        assert len(tail) == 5
        assert tail[-1] == "end"
        assert len(logged.records) <= LOG_BURST + 10
        assert "lines of output not logged" in logged.records[-1].getMessage()
    finally:
        logger.removeHandler(logged)
        logger.propagate = True
