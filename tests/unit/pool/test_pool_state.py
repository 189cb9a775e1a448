"""Pool's lifecycle state: the moves its table allows, and no other."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from snakepit.errors import ConfigError, PoolClosed
from snakepit.pool import Pool
from snakepit.pool._pool import _TRANSITIONS, PoolState
from snakepit.pool._worker_server import IllegalTransition

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # no I/O: the backend does not matter

STATES: tuple[PoolState, ...] = get_args(PoolState)
ADAPTER = "tests.unit.pool._adapters:Controlled"


def pool_in(state: PoolState) -> Pool:
    pool = Pool(ADAPTER, size=1)
    pool._state = state  # as if its transitions had brought it there
    return pool


def test_every_state_has_a_row_and_closed_is_final() -> None:
    assert set(_TRANSITIONS) == set(STATES)
    assert _TRANSITIONS["closed"] == frozenset()


@pytest.mark.parametrize(
    ("old", "new"), [(o, n) for o, n in itertools.product(STATES, STATES) if n in _TRANSITIONS[o]]
)
def test_a_legal_move_changes_the_state(old: PoolState, new: PoolState) -> None:
    pool = pool_in(old)
    pool._enter(new)
    assert pool._state == new


@pytest.mark.parametrize(
    ("old", "new"),
    [(o, n) for o, n in itertools.product(STATES, STATES) if n not in _TRANSITIONS[o]],
)
def test_an_illegal_move_raises_and_keeps_the_state(old: PoolState, new: PoolState) -> None:
    pool = pool_in(old)
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        pool._enter(new)
    assert pool._state == old


@pytest.mark.parametrize("state", STATES)
def test_closing_works_from_any_state_and_again(state: PoolState) -> None:
    pool = pool_in(state)
    pool._close()
    pool._close()
    assert pool._state == "closed"


async def test_a_pool_closed_before_it_was_entered_cannot_be_entered() -> None:
    pool = Pool(ADAPTER, size=1)
    await pool.aclose()
    assert pool._state == "closed"
    with pytest.raises(PoolClosed, match="entered once"):
        await pool.__aenter__()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_pool_entered_on_trio_is_a_config_error_naming_asyncio() -> None:
    # Before: "RuntimeError: no running event loop", from a pool half-started.
    pool = Pool(ADAPTER, size=1)
    with pytest.raises(ConfigError, match=r"a Pool runs on asyncio .* not on trio"):
        await pool.__aenter__()
    assert pool._state == "new"
