"""Sessions: a store of sessions in the pool's supervision tree, and where they are kept.

:class:`SessionStore` is a GenServer that owns the sessions' rules (ids,
TTLs and their expiry, ``max_sessions``, metadata, the worker a session is
pinned to, an ``on_end`` callback); its ref, a :class:`SessionStoreRef`, is
the API. It keeps the sessions in a :class:`SessionBackend`:
:class:`MemoryBackend` (the default) in this process, outside the server,
so that a restart of the server keeps them; :class:`RedisBackend` in Redis,
for pools on several hosts. :class:`RedisBackend` needs the ``redis``
package (``pip install 'snakepit[redis]'``): it is imported on first use,
so snakepit works without it.

Each :class:`~snakepit.Pool` runs a store as the first child of its
supervision tree (started before the workers, stopped after them), with the
pool's ``sessions=SessionStoreConfig(...)`` option (a memory backend of its
own by default). ``pool.session()`` creates and deletes sessions in it,
``pool.sessions`` is its :class:`SessionStoreRef`, and a session's calls go
to the worker the store records it is pinned to (``SessionRecord.worker_id``,
a worker's ``pin_id``), as its :data:`Affinity` says. When a session ends
(deleted, or expired), the pool has its worker run
``Adapter.on_session_end``, then calls the config's ``on_end``.

Session variables are typed: a :class:`VariableSpec` (``VariableSpec.make(name,
type, **constraints)``, checked when made) gives a variable's name, its
:data:`VariableType` (``"integer"``, ``"float"``, ``"string"``, ``"boolean"``,
``"choice"``, ``"embedding"``, ``"tensor"``) and the constraints of that type
(``min``/``max`` inclusive; ``choices``; ``max_length`` in characters and a
``pattern`` the whole string matches; an embedding's ``dimension``; a tensor's
``shape`` and ``dtype``). ``spec.validate(value)`` returns the canonical value
(numpy scalars as Python ones, an embedding as a tuple of floats, an ndarray as
a :class:`Tensor`) or raises :class:`~snakepit.errors.VariableValidationError`
naming the constraint broken; floats and embeddings must be finite.
``spec.encode``/``spec.decode`` give a value's JSON-able stored form and back.
A :class:`Tensor` holds a dtype (numpy's name: ``"float32"``...), a shape and
its items' bytes (C order, little-endian); ``Tensor.from_numpy`` and
``to_numpy`` convert (numpy is needed only for these). A :class:`Variable` is a
variable as read (spec, value, version: 1, then +1 per write); a
:class:`VariableChange` is a change seen by a watch (old and new value,
version, and who made it).
"""

from typing import TYPE_CHECKING, Any

from snakepit._wire._variables import Tensor as Tensor
from snakepit._wire._variables import Variable as Variable
from snakepit._wire._variables import VariableChange as VariableChange
from snakepit._wire._variables import VariableSpec as VariableSpec
from snakepit._wire._variables import VariableType as VariableType

from ._backend import SessionBackend as SessionBackend
from ._backend import SessionRecord as SessionRecord
from ._config import DEFAULT_TTL as DEFAULT_TTL
from ._config import Affinity as Affinity
from ._config import EndReason as EndReason
from ._config import OnEnd as OnEnd
from ._config import SessionStoreConfig as SessionStoreConfig
from ._memory import MemoryBackend as MemoryBackend
from ._session_variables import SessionVariables as SessionVariables
from ._store import SessionStore as SessionStore
from ._store_ref import SessionStoreRef as SessionStoreRef
from ._variable_backend import VariableBackend as VariableBackend
from ._variable_backend import VariableEvent as VariableEvent
from ._variable_backend import VariableRecord as VariableRecord

if TYPE_CHECKING:
    from ._redis import RedisBackend as RedisBackend


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":  # the redis package is an extra: loaded on first use
        from ._redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'snakepit.session' has no attribute {name!r}")


__all__ = (
    "DEFAULT_TTL",
    "Affinity",
    "EndReason",
    "MemoryBackend",
    "OnEnd",
    "RedisBackend",
    "SessionBackend",
    "SessionRecord",
    "SessionStore",
    "SessionStoreConfig",
    "SessionStoreRef",
    "SessionVariables",
    "Tensor",
    "Variable",
    "VariableBackend",
    "VariableChange",
    "VariableEvent",
    "VariableRecord",
    "VariableSpec",
    "VariableType",
)
