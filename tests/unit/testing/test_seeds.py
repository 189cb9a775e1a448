"""chaos_seed and make_chaos_rng (testing/_seeds.py): a stable seed, a replayable rng."""

from __future__ import annotations

import pytest

from snakepit.testing import chaos_seed, make_chaos_rng

pytestmark = pytest.mark.anyio


class TestSeeds:
    def test_the_seed_is_a_stable_hash_of_seed_and_test_id(self) -> None:
        # A literal: the same in every process, whatever PYTHONHASHSEED says.
        assert chaos_seed(1234, "tests/x.py::test_a") == 15922352466862463147
        assert chaos_seed(1234, "tests/x.py::test_a") != chaos_seed(1234, "tests/x.py::test_b")
        assert chaos_seed(1234, "t") != chaos_seed(1235, "t")
        assert 0 <= chaos_seed(0, "") < 2**64

    def test_the_rng_replays(self) -> None:
        first = [make_chaos_rng(7, "t").random() for _ in range(3)]
        assert first == [make_chaos_rng(7, "t").random() for _ in range(3)]
        assert make_chaos_rng(7, "t").random() != make_chaos_rng(8, "t").random()

    def test_chaos_rng_is_only_the_fixture(self) -> None:
        import snakepit.testing

        with pytest.raises(
            AttributeError, match=r"chaos_rng is a pytest fixture: .*make_chaos_rng"
        ):
            snakepit.testing.chaos_rng  # noqa: B018
        assert "chaos_rng" not in snakepit.testing.__all__
        assert snakepit.testing.make_chaos_rng is make_chaos_rng
