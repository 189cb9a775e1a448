"""What the benchmarks' reports share: table cells, ratios, verdicts, versions."""

from __future__ import annotations

import contextlib
from importlib.metadata import PackageNotFoundError, version


def fmt(value: float | None, spec: str, width: int) -> str:
    """``value`` in a table cell of ``width`` (``spec`` its format), "—" for None."""
    return f"{'—':>{width}}" if value is None else f"{value:>{width}{spec}}"


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, None when either is unknown (or ``base`` is 0)."""
    return None if value is None or not base else value / base


def verdict(met: bool) -> str:
    """A target's line: met, or NOT MET."""
    return "met" if met else "NOT MET"


def versions(*names: str) -> dict[str, str]:
    """The installed versions of these distributions (those installed)."""
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found
