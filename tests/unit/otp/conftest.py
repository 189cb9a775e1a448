"""Fixtures of the OTP core's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._sup_helpers import Subscriptions


@pytest.fixture
def subscribe() -> Iterator[Subscriptions]:
    """``subscribe(sup)``: ``sup.subscribe()``, every stream closed after the test."""
    subscriptions = Subscriptions()
    yield subscriptions
    subscriptions.close()
