"""Seeds for chaos: chaos_seed and make_chaos_rng, what the ``chaos_rng`` fixture is made of.

A stable hash of a run's seed and a test id, so each test draws its own
stream, the same in every process, and a failing run replays from its seed.
"""

from __future__ import annotations

import hashlib
import random

__all__ = (
    "chaos_seed",
    "make_chaos_rng",
)


def chaos_seed(base_seed: int, test_id: str) -> int:
    """Derive a 64-bit seed from a run's seed and a test id, the same in every process.

    A stable hash (BLAKE2b), not Python's ``hash()``, which is salted per process::

        seed = chaos_seed(request.config.getoption("randomly_seed"), request.node.nodeid)
    """
    digest = hashlib.blake2b(f"{base_seed}\0{test_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def make_chaos_rng(base_seed: int, test_id: str) -> random.Random:
    """Return a :class:`random.Random` seeded with :func:`chaos_seed`: the fixture's, by hand.

    What the ``chaos_rng`` fixture gives a test (``base_seed`` is then
    pytest-randomly's seed, ``test_id`` the node id), for code outside
    pytest or to derive more generators. In a test, take the fixture::

        rng = make_chaos_rng(1234, "tests/test_x.py::test_storm")
        victim = rng.choice(children)
    """
    return random.Random(chaos_seed(base_seed, test_id))
