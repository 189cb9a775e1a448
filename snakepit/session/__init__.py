"""Sessions: a store of sessions in the pool's supervision tree, and where they are kept.

:class:`SessionStore` is a GenServer that owns the sessions' rules (ids,
TTLs and their expiry, ``max_sessions``, metadata, the worker a session is
pinned to, an ``on_end`` callback); its ref, a :class:`SessionStoreRef`, is
the API. It keeps the sessions in a :class:`SessionBackend`:
:class:`MemoryBackend` (the default) in this process, outside the server,
so that a restart of the server keeps them.

Work in progress (issue #13): the Redis backend and the pool's use of the
store (affinity, ``pool.session()``) are being built.
"""

from ._backend import SessionBackend as SessionBackend
from ._backend import SessionRecord as SessionRecord
from ._config import DEFAULT_TTL as DEFAULT_TTL
from ._config import Affinity as Affinity
from ._config import EndReason as EndReason
from ._config import OnEnd as OnEnd
from ._config import SessionStoreConfig as SessionStoreConfig
from ._memory import MemoryBackend as MemoryBackend
from ._store import SessionStore as SessionStore
from ._store_ref import SessionStoreRef as SessionStoreRef

__all__ = (
    "DEFAULT_TTL",
    "Affinity",
    "EndReason",
    "MemoryBackend",
    "OnEnd",
    "SessionBackend",
    "SessionRecord",
    "SessionStore",
    "SessionStoreConfig",
    "SessionStoreRef",
)
