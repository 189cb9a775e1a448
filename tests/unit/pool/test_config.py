"""PoolConfig and PoolOptions: a pool's options, typed for type checkers and checked at run time."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest

import snakepit
from snakepit.errors import ArgumentTypeError, ConfigError
from snakepit.pool import Pool, PoolConfig, PoolOptions

ADAPTER = "snakepit.testing.adapters:Echo"
ROOT = Path(snakepit.__file__).resolve().parents[1]


def test_pool_options_are_the_config_fields_but_adapter() -> None:
    # Pool(adapter, **options): a new PoolConfig field needs its PoolOptions key.
    fields = {f.name for f in dataclasses.fields(PoolConfig)}
    assert set(PoolOptions.__annotations__) == fields - {"adapter"}
    assert PoolOptions.__total__ is False


def _int_fields() -> list[str]:
    hints = typing.get_type_hints(PoolConfig)
    return [name for name, hint in hints.items() if int in (hint, *typing.get_args(hint))]


@pytest.mark.parametrize("name", _int_fields())
def test_no_count_takes_a_bool(name: str) -> None:
    # Regression (issue #12): every count refuses True, max_restarts included.
    options: dict[str, Any] = {name: True}
    with pytest.raises(ArgumentTypeError, match=f"^{name}: must be an int >= "):
        PoolConfig(adapter=ADAPTER, **options)


@pytest.mark.parametrize(
    ("name", "value"),
    [("transport", "tcp"), ("start_method", "fork"), ("transport", 1), ("start_method", None)],
)
def test_the_literal_options_are_checked_at_run_time(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(adapter=ADAPTER, **{name: value})
    assert info.value.field == name


def test_mypy_rejects_a_misspelt_or_mistyped_option(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # One mypy run over a small snippet, against the snakepit under test. In a
    # process of its own: mypy's heap would stay in this one and slow every
    # later gc.collect() of the run. With the project's mypy cache when there
    # is one (``make test`` type-checks first: 0.2 s instead of 1.5 s), else
    # one kept in pytest's cache directory, so that only a first run pays.
    pytest.importorskip("mypy")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from snakepit import Pool

            Pool("m:A", size=2, transport="grpc", start_method="spawn", max_restarts=None)
            Pool("m:A", max_concurency=2)
            Pool("m:A", transport="tcp")
            Pool("m:A", size="2")
            """
        )
    )
    command = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary"]
    cache = ROOT / ".mypy_cache"
    if not cache.is_dir():
        pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
        cache = tmp_path if pytest_cache is None else pytest_cache.mkdir("mypy")
    done = subprocess.run(
        [*command, "--cache-dir", str(cache), str(snippet)],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    out, err, status = done.stdout, done.stderr, done.returncode
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert status == 1, (out, err)
    assert [line.split(":")[1] for line in errors] == ["5", "6", "7"], out
    assert 'Unexpected keyword argument "max_concurency" for "Pool"' in errors[0]
    assert 'Argument "transport" to "Pool" has incompatible type' in errors[1]
    assert 'Argument "size" to "Pool" has incompatible type' in errors[2]


def test_an_unknown_option_lists_the_options_pool_takes() -> None:
    # ``adapter`` is Pool's first parameter, not one of its options.
    with pytest.raises(ConfigError, match="max_concurency: unknown pool option") as info:
        Pool("a.b:C", max_concurency=2)  # type: ignore[call-arg]
    assert "adapter" not in str(info.value)
    assert "max_concurrency" in str(info.value)


def test_config_must_be_a_pool_config() -> None:
    with pytest.raises(ArgumentTypeError, match="config: must be a PoolConfig"):
        Pool(config="a.b:C")  # type: ignore[arg-type]
