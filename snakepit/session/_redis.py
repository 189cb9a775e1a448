"""RedisBackend: sessions kept in Redis, shared by every pool that points at the same keys.

Two keys per namespace: a hash ``{NS}:sessions`` of session id -> the record
as JSON, and a sorted set ``{NS}:expiry`` of session id -> its
``expires_at`` (a record whose ``ttl`` is None is not in it), which answers
:meth:`~RedisBackend.due` with one range query. A session's variables (it is
a :class:`~snakepit.session.VariableBackend`) are a hash
``{NS}:vars:<session id>`` of name -> the :class:`VariableRecord` as JSON,
deleted with the session. The namespace is in braces (a Redis Cluster hash
tag) so every key of a namespace lives on one node and a script may touch
several (each is passed in its KEYS). In the JSON, times are the exact
``repr()`` of their float, and the metadata, a variable's spec and its value
are JSON text, all as strings: a script decodes a record, sets a field and
encodes it again (Redis's cjson) without changing the others (cjson would
round floats it decoded).

Changes of a session's variables are published on the channel
``{NS}:vch:<session id>`` by the script that makes them, one message per
write (so a watch never sees half of one): a JSON array of ``[name, old JSON,
new JSON, source]``, null for none; and ``end`` by the script that deletes the
session (the sweep's too). A write whose array is longer than
:data:`INLINE_LIMIT` bytes (8 KiB) is published by reference instead: the
script SETs the array at a new key ``{NS}:vchg:<session id>:<writer>:<n>``
(named by the writing backend, which passes it in KEYS with the others, so
every key a script touches is declared; it expires after :data:`CHANGE_TTL`
seconds, 60) and publishes ``{"ref": key, "names": [...]}``; a watch reads
the key (a GET, on the backend's client) when its iteration comes to that
write, in order, and one that comes too late (the key expired) is ended as
one that fell behind. Inline, a large value (a long string, a tensor)
overflowed a watching connection's pub/sub output buffer (by default 32 MiB,
or 8 MiB for 60 s: a change carries the old and the new value, so one of a
17 MB value passes the first, and a watcher behind by a few 12 MB changes the
second), and Redis dropped the connection and every watch on it. A watch
subscribes a connection of its own before it returns; see
:meth:`~RedisBackend.watch_variables` for how one that falls behind is ended.

Each method is one command or one Lua script, so atomic on the server:
:meth:`~RedisBackend.create` checks the id and the limit and writes both keys
in one script, so concurrent creates (from this process or from pools on
other hosts) never exceed the limit; :meth:`~RedisBackend.touch` and
:meth:`~RedisBackend.pin` read, check (the expiry, the pin they replace)
and write in one script, so stores on several hosts lose no update; the
sweep's delete removes a session only if it has expired by then. Each
variable operation is one script that checks the session is live at the
store's ``now``, then reads, checks the expectations and writes, all or none. It runs
on asyncio only (the ``redis`` package's asyncio client); install it with
``pip install 'snakepit[redis]'``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.asyncio
import redis.exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    SessionBackendError,
    SessionLimitReached,
    SessionNotFound,
    VariableError,
    VariableExists,
    VariableNotFound,
)

from ._backend import SessionRecord
from ._variable_backend import Expectations, VariableEvent, VariableRecord

__all__ = ("RedisBackend",)

#: Connections a RedisBackend made from a URL opens at most (a watch holds one);
#: past it, an operation waits for one, up to the backend's ``timeout``.
MAX_CONNECTIONS: Final = 256

#: Where :class:`RedisBackend` connects when given neither a URL nor a client.
DEFAULT_URL: Final = "redis://localhost:6379/0"

_T = TypeVar("_T")

# KEYS: sessions hash, expiry zset. ARGV: id, json, limit ("" none), expires_at ("" none).
# 0: the id is taken; -1: the limit is reached; 1: written. Nothing is written unless 1.
_CREATE: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if ARGV[3] ~= '' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 1
"""

# KEYS and ARGV as _CREATE's, without the limit. 0: no such session (nothing written).
_REPLACE: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"""

# A live record (the JSON in `value`, decoded to `r`) at ARGV[2] (now), or a return of false.
_LIVE: Final = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return false end
local r = cjson.decode(value)
if r.ttl ~= cjson.null and tonumber(r.last_used) + tonumber(r.ttl) <= tonumber(ARGV[2]) then
  return false
end
"""

# KEYS as above; ARGV: id, now. The new JSON, or nil (no such session, or expired).
_TOUCH: Final = (
    _LIVE
    + """
if tonumber(ARGV[2]) > tonumber(r.last_used) then  -- a clock set back does not move it back
  r.last_used = ARGV[2]
  if r.ttl ~= cjson.null then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(r.ttl), ARGV[1])
  end
end
value = cjson.encode(r)
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
"""
)

# KEYS as above; ARGV: id, now, worker ("" none), "is" to compare first ("" not),
# the worker it must be pinned to ("" none). The JSON after it, or nil (gone or expired).
_PIN: Final = (
    _LIVE
    + """
if ARGV[4] == 'is' then
  local current = r.worker_id
  if current == cjson.null then current = '' end
  if current ~= ARGV[5] then return value end
end
if ARGV[3] == '' then r.worker_id = cjson.null else r.worker_id = ARGV[3] end
value = cjson.encode(r)
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
"""
)

# KEYS as above, then the session's variables hash; ARGV: id, expired_at ("": whatever
# its expiry), the session's channel. The JSON removed, or nil. Its variables go with
# it, and its watches are told it ended.
_DELETE: Final = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return false end
if ARGV[2] ~= '' then
  local r = cjson.decode(value)
  if r.ttl == cjson.null or tonumber(r.last_used) + tonumber(r.ttl) > tonumber(ARGV[2]) then
    return false
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[3], 'end')
return value
"""

# KEYS as above; ARGV: now. The JSON of every record whose expires_at <= now.
_DUE: Final = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local found = {}
for _, id in ipairs(ids) do
  local value = redis.call('HGET', KEYS[1], id)
  if value then found[#found + 1] = value end
end
return found
"""


# -- variables: KEYS sessions hash, the session's variables hash[, a change's key];
# ARGV id, now[, channel, inline limit, TTL ms], ... ---------------------------------
# A variable's JSON has its spec and value as JSON text (strings: cjson leaves them
# as they are) and updated_at as the exact repr of its float. Each write is
# published on the session's channel in the script that makes it (_PUBLISH).

# Defines publish(events): one message on ARGV[3] for one write's events (each
# {name, old JSON or null, new JSON or null, source}): their JSON array itself if it
# is at most ARGV[4] bytes; else the array is SET at KEYS[3] (a new key, expiring
# after ARGV[5] ms) and the message is {"ref": KEYS[3], "names": the events' names}.
_PUBLISH: Final = """
local function publish(events)
  local message = cjson.encode(events)
  if #message > tonumber(ARGV[4]) then
    redis.call('SET', KEYS[3], message, 'PX', ARGV[5])
    local names = {}
    for i, event in ipairs(events) do names[i] = event[1] end
    message = cjson.encode({ref = KEYS[3], names = names})
  end
  redis.call('PUBLISH', ARGV[3], message)
end
"""

# ARGV: id, now, channel, limit, TTL, name, JSON, source. nil: no live session; 0: the
# name is taken.
_REGISTER: Final = (
    _PUBLISH
    + _LIVE
    + """
if redis.call('HSETNX', KEYS[2], ARGV[6], ARGV[7]) == 0 then return 0 end
publish({{ARGV[6], cjson.null, ARGV[7], ARGV[8]}})
return 1
"""
)

# ARGV: id, now, "all" or "names", the names. nil: no live session; {0, i}: the i-th
# name (from 0) is not there; {1, JSON...}: the records (of the names, in order).
_GET_VARIABLES: Final = (
    _LIVE
    + """
local found
if ARGV[3] == 'all' then
  found = redis.call('HVALS', KEYS[2])
  table.insert(found, 1, 1)
  return found
end
found = {1}
for i = 4, #ARGV do
  local record = redis.call('HGET', KEYS[2], ARGV[i])
  if not record then return {0, i - 4} end
  found[#found + 1] = record
end
return found
"""
)

# ARGV: id, now, channel, limit, TTL, source, n, n (name, value JSON) pairs, then (name,
# uid, version or "") expectations. nil: no live session; {0, i}: the i-th name (from 0)
# is not there; {-1}: an expectation does not hold; {1, JSON...}: the new records (of
# the names, in order). Nothing is written unless 1.
_SET_VARIABLES: Final = (
    _PUBLISH
    + _LIVE
    + """
local n = tonumber(ARGV[7])
local olds = {}
for i = 1, n do
  local old = redis.call('HGET', KEYS[2], ARGV[6 + 2 * i])
  if not old then return {0, i - 1} end
  olds[i] = old
end
for i = 8 + 2 * n, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if not old then return {-1} end
  local e = cjson.decode(old)
  if e.uid ~= ARGV[i + 1] then return {-1} end
  if ARGV[i + 2] ~= '' and e.version ~= tonumber(ARGV[i + 2]) then return {-1} end
end
local written = {1}
local events = {}
for i = 1, n do
  local name = ARGV[6 + 2 * i]
  local e = cjson.decode(olds[i])
  e.value = ARGV[7 + 2 * i]
  e.version = e.version + 1
  e.updated_at = ARGV[2]
  e.source = ARGV[6]
  local new = cjson.encode(e)
  redis.call('HSET', KEYS[2], name, new)
  written[i + 1] = new
  events[i] = {name, olds[i], new, ARGV[6]}
end
if n > 0 then publish(events) end
return written
"""
)

# ARGV: id, now, channel, limit, TTL, name, source. nil: no live session; 0: no such
# name; else the JSON removed.
_DELETE_VARIABLE: Final = (
    _PUBLISH
    + _LIVE
    + """
local old = redis.call('HGET', KEYS[2], ARGV[6])
if not old then return 0 end
redis.call('HDEL', KEYS[2], ARGV[6])
publish({{ARGV[6], old, cjson.null, ARGV[7]}})
return old
"""
)

#: What a watch's channel says when its session ends.
_END: Final = b"end"

#: A write whose message (its changes as JSON) is longer than this many bytes is
#: published by reference: 1024 changes (a watch's default buffer) that a watcher
#: has not read yet stay within Redis's default pub/sub soft limit (8 MiB).
INLINE_LIMIT: Final = 8 * 1024
#: Seconds a change published by reference is kept for its watches to read.
CHANGE_TTL: Final = 60.0


def _score(value: float | None) -> str:
    """A float as Redis reads it back to the same double (repr is exact); None: ``""``."""
    return "" if value is None else repr(float(value))


def _encode(record: SessionRecord) -> str:
    # Times as their exact repr and the metadata as JSON text: strings, which
    # a script's cjson decodes and encodes again unchanged.
    return json.dumps(
        {
            "session_id": record.session_id,
            "created_at": repr(float(record.created_at)),
            "last_used": repr(float(record.last_used)),
            "ttl": _score(record.ttl) or None,
            "metadata": json.dumps(dict(record.metadata), separators=(",", ":")),
            "worker_id": record.worker_id,
            "affinity": record.affinity,
        },
        separators=(",", ":"),
    )


def _encode_variable(record: VariableRecord) -> str:
    # Spec and value as JSON text (a script's cjson would round floats), the time exact.
    return json.dumps(
        {
            "name": record.name,
            "spec": json.dumps(dict(record.spec), separators=(",", ":")),
            "value": json.dumps(record.value, separators=(",", ":")),
            "version": record.version,
            "uid": record.uid,
            "updated_at": repr(float(record.updated_at)),
            "source": record.source,
        },
        separators=(",", ":"),
    )


def _where(kwargs: dict[str, Any]) -> str:
    """Where a connection pool connects (``unix:///tmp/r.sock?db=0``, ``redis://h:6379/0``)."""
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def _redact(url: str) -> str:
    """``url`` without its password (it goes into error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisBackend:
    """A :class:`~snakepit.session.SessionBackend` that keeps sessions in Redis.

    ``RedisBackend("unix:///run/redis.sock", namespace="app")`` connects on
    first use (``redis://``, ``rediss://`` and ``unix://`` URLs, as
    ``redis.asyncio.Redis.from_url`` reads them), with ``timeout`` seconds to
    connect and for each reply, and one immediate retry when a connection
    breaks (a pooled connection the server closed). Its connections are
    pooled, at most :data:`MAX_CONNECTIONS` (each watch holds one): past
    that, an operation waits up to ``timeout`` for one to come free. Pass ``client`` instead
    to use a ``redis.asyncio.Redis`` of your own (its timeouts and retries,
    and :meth:`aclose` leaves it open: it is yours).

    Pools that share a server and a namespace share their sessions; other
    namespaces are invisible to them. Records are stored as JSON, so their
    metadata must be JSON-able (the store checks it) and comes back as a dict.
    The client is asyncio's: this backend runs on asyncio only.

    :param url: where Redis is; default ``redis://localhost:6379/0``. Not with ``client``.
    :param namespace: the prefix of the backend's keys (see :attr:`keys`), non-empty.
    :param client: a client to use instead of one made from ``url``.
    :param timeout: seconds to connect and to wait for each reply (``url`` only).
    :raises ArgumentTypeError: an argument of the wrong type.
    :raises ConfigError: both ``url`` and ``client``, an empty namespace, a URL
        Redis cannot read, or a timeout that is not > 0.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "snakepit",
        client: redis.asyncio.Redis | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(namespace, str):
            raise ArgumentTypeError("namespace", f"must be a str, got {namespace!r}")
        if not namespace:
            raise ConfigError("namespace", "must not be empty")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ArgumentTypeError("timeout", f"must be a number of seconds, got {timeout!r}")
        if not timeout > 0:
            raise ConfigError("timeout", f"must be > 0, got {timeout!r}")
        if client is not None:
            if url is not None:
                raise ConfigError("url", "give a url or a client, not both")
            if not isinstance(client, redis.asyncio.Redis):
                raise ArgumentTypeError("client", f"must be a redis.asyncio.Redis, got {client!r}")
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                # Its watches compare raw replies (a decoded PING reply never matched).
                raise ConfigError(
                    "client", "must not decode responses (decode_responses=True): give a raw one"
                )
            self._client = client
            self._owned = False
            where = _where(client.connection_pool.connection_kwargs)
        else:
            url = DEFAULT_URL if url is None else url
            if not isinstance(url, str):
                raise ArgumentTypeError("url", f"must be a str, got {url!r}")
            try:
                # Blocking: a burst past max_connections waits (up to
                # ``timeout``) for a connection instead of failing at once.
                pool = redis.asyncio.BlockingConnectionPool.from_url(
                    url,
                    max_connections=MAX_CONNECTIONS,
                    timeout=timeout,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(NoBackoff(), 1),
                )
                self._client = redis.asyncio.Redis.from_pool(pool)
            except ValueError as exc:
                raise ConfigError("url", f"{_redact(url)!r}: {exc}") from exc
            self._owned = True
            where = _redact(url)
        self._namespace = namespace
        # Changes published by reference: their keys' prefix (unique to this
        # backend), how large a message goes inline, and how long one is kept.
        self._changes = f"{{{namespace}}}:vchg:"
        self._change_ids = itertools.count()
        self._change_token = secrets.token_hex(8)
        self._inline_limit = INLINE_LIMIT
        self._change_ttl = CHANGE_TTL
        self._hash = f"{{{namespace}}}:sessions"
        self._expiry = f"{{{namespace}}}:expiry"
        self._name = f"redis {where} namespace {namespace!r}"
        self._create = self._client.register_script(_CREATE)
        self._replace = self._client.register_script(_REPLACE)
        self._delete = self._client.register_script(_DELETE)
        self._touch = self._client.register_script(_TOUCH)
        self._pin = self._client.register_script(_PIN)
        self._due = self._client.register_script(_DUE)
        self._register_variable = self._client.register_script(_REGISTER)
        self._get_variables = self._client.register_script(_GET_VARIABLES)
        self._set_variables = self._client.register_script(_SET_VARIABLES)
        self._delete_variable = self._client.register_script(_DELETE_VARIABLE)

    def __repr__(self) -> str:
        return f"<RedisBackend {self._name}>"

    @property
    def namespace(self) -> str:
        """The prefix of this backend's keys."""
        return self._namespace

    @property
    def keys(self) -> tuple[str, str]:
        """Its two fixed Redis keys: the hash of records and the sorted set of expiry times.

        Each session with variables has a key of its own besides
        (:meth:`variables_key`), removed with the session, and a large
        change is kept at a key of its own for a while (``{NS}:vchg:...``,
        see the module's docstring), left to expire.
        """
        return (self._hash, self._expiry)

    def variables_key(self, session_id: str) -> str:
        """The Redis key of the hash of ``session_id``'s variables."""
        return f"{{{self._namespace}}}:vars:{session_id}"

    def variables_channel(self, session_id: str) -> str:
        """The pub/sub channel of the changes of ``session_id``'s variables."""
        return f"{{{self._namespace}}}:vch:{session_id}"

    def _write_keys(self, session_id: str) -> list[str]:
        """The KEYS of a script that writes variables: the last a new key for its change.

        (Set only if the change is published by reference: see the module's docstring.)
        """
        change = f"{self._changes}{session_id}:{self._change_token}:{next(self._change_ids)}"
        return [self._hash, self.variables_key(session_id), change]

    def _write_args(self, session_id: str, now: float) -> list[str]:
        """The first ARGV of a script that writes variables (see _PUBLISH)."""
        return [
            session_id,
            _score(now),
            self.variables_channel(session_id),
            str(self._inline_limit),
            str(max(1, round(self._change_ttl * 1000))),
        ]

    async def _run(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Await ``operation``, turning any error of Redis's into a SessionBackendError."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio, say: redis.asyncio would fail there with no clear word
            detail = f"{what}: runs on asyncio only (the redis package's client), not this loop"
            raise SessionBackendError(self._name, detail) from None
        try:
            return await operation()
        except redis.exceptions.RedisError as exc:
            detail = f"{what} failed: {type(exc).__name__}: {exc}"
            raise SessionBackendError(self._name, detail) from exc

    def _decode(self, raw: object) -> SessionRecord:
        """A record from the JSON a script or command returned (bytes or str)."""
        try:
            if not isinstance(raw, bytes | str):
                raise TypeError(f"a reply of type {type(raw).__name__}")
            data = json.loads(raw)
            ttl = data["ttl"]
            return SessionRecord(
                session_id=data["session_id"],
                created_at=float(data["created_at"]),
                last_used=float(data["last_used"]),
                ttl=None if ttl is None else float(ttl),
                metadata=json.loads(data["metadata"]),
                worker_id=data["worker_id"],
                affinity=data["affinity"],
            )
        except (ValueError, TypeError, KeyError) as exc:
            detail = f"a stored record cannot be read ({type(exc).__name__}: {exc}): {raw!r:.200}"
            raise SessionBackendError(self._name, detail) from exc

    async def create(self, record: SessionRecord, *, limit: int | None) -> bool:
        """Store ``record`` if no session has its id and fewer than ``limit`` exist (one script).

        :returns: False if its id is taken (nothing is written).
        :raises SessionLimitReached: ``limit`` sessions exist already (nothing is written).
        :raises SessionBackendError: Redis is unreachable or answered an error (or
            this is not asyncio: so for every method).
        """
        args = [
            record.session_id,
            _encode(record),
            "" if limit is None else str(limit),
            _score(record.expires_at),
        ]
        keys = [self._hash, self._expiry]
        done = await self._run("create", lambda: self._create(keys=keys, args=args))
        if done == -1:
            assert limit is not None
            raise SessionLimitReached(limit)
        return bool(done == 1)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or None.

        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        raw = await self._run("get", lambda: self._client.hget(self._hash, session_id))
        return None if raw is None else self._decode(raw)

    async def replace(self, record: SessionRecord) -> bool:
        """Store ``record`` over the one with its id; False (nothing written) if there is none.

        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        args = [record.session_id, _encode(record), _score(record.expires_at)]
        keys = [self._hash, self._expiry]
        done = await self._run("replace", lambda: self._replace(keys=keys, args=args))
        return bool(done == 1)

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        """Set ``last_used`` to ``now`` unless the session is gone or expired (one script).

        :returns: the new record, or None (nothing written).
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self._expiry]
        args = [session_id, _score(now)]
        raw = await self._run("touch", lambda: self._touch(keys=keys, args=args))
        return None if raw is None else self._decode(raw)

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        """Set ``worker_id`` (if pinned to ``only_if_pinned_to``) unless gone or expired.

        One script.

        :returns: the record after it (see the protocol), or None (nothing written).
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self._expiry]
        compare = "" if only_if_pinned_to is ... else "is"
        expected = (
            "" if only_if_pinned_to is ... or only_if_pinned_to is None else only_if_pinned_to
        )
        args = [session_id, _score(now), worker_id or "", compare, expected]
        raw = await self._run("pin", lambda: self._pin(keys=keys, args=args))
        return None if raw is None else self._decode(raw)

    async def delete(
        self, session_id: str, *, expired_at: float | None = None
    ) -> SessionRecord | None:
        """Remove ``session_id`` (with ``expired_at``: only if expired then); one script.

        Its variables go with it, and its watches end.

        :returns: the record removed, or None.
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self._expiry, self.variables_key(session_id)]
        args = [session_id, _score(expired_at), self.variables_channel(session_id)]
        raw = await self._run("delete", lambda: self._delete(keys=keys, args=args))
        return None if raw is None else self._decode(raw)

    async def records(self) -> list[SessionRecord]:
        """Every record, in no particular order.

        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        values = await self._run("records", lambda: self._client.hvals(self._hash))
        return [self._decode(raw) for raw in values]

    async def count(self) -> int:
        """How many sessions there are.

        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        return int(await self._run("count", lambda: self._client.hlen(self._hash)))

    async def due(self, now: float) -> list[SessionRecord]:
        """The records whose ``expires_at`` is <= ``now`` (one script).

        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self._expiry]
        values = await self._run("due", lambda: self._due(keys=keys, args=[_score(now)]))
        return [self._decode(raw) for raw in values]

    async def aclose(self) -> None:
        """Close the connections of a client it made (one passed in is left open).

        The sessions stay in Redis.
        """
        if self._owned:
            await self._client.aclose()

    # -- variables (VariableBackend) ------------------------------------------------------

    def _decode_variable(self, raw: object) -> VariableRecord:
        """A variable's record from its stored JSON (bytes or str)."""
        try:
            if not isinstance(raw, bytes | str):
                raise TypeError(f"a reply of type {type(raw).__name__}")
            data = json.loads(raw)
            return VariableRecord(
                name=data["name"],
                spec=json.loads(data["spec"]),
                value=json.loads(data["value"]),
                version=int(data["version"]),
                uid=data["uid"],
                updated_at=float(data["updated_at"]),
                source=data["source"],
            )
        except (ValueError, TypeError, KeyError) as exc:
            detail = f"a stored variable cannot be read ({type(exc).__name__}: {exc}): {raw!r:.200}"
            raise SessionBackendError(self._name, detail) from exc

    def _decode_message(self, raw: object) -> list[VariableEvent] | tuple[str, list[str]]:
        """A message of a session's channel (not ``end``): its events, or a reference.

        A reference: the key of the write's events, and their names.
        """
        if isinstance(raw, bytes | str) and raw[:1] in (b"{", "{"):
            try:
                found = json.loads(raw)
                key, names = found["ref"], found["names"]
                if not isinstance(key, str) or not isinstance(names, list):
                    raise TypeError("a reference with no key or names")
                if not all(isinstance(name, str) for name in names):
                    raise TypeError("a reference with a name that is not a str")
            except (ValueError, TypeError, KeyError) as exc:
                detail = f"a change cannot be read ({type(exc).__name__}: {exc}): {raw!r:.200}"
                raise SessionBackendError(self._name, detail) from exc
            return key, names
        return self._decode_events(raw)

    def _decode_events(self, raw: object) -> list[VariableEvent]:
        """The events of one message of a session's channel."""
        try:
            if not isinstance(raw, bytes | str):
                raise TypeError(f"a message of type {type(raw).__name__}")
            events = []
            for name, old, new, source in json.loads(raw):
                events.append(
                    VariableEvent(
                        name,
                        None if old is None else self._decode_variable(old),
                        None if new is None else self._decode_variable(new),
                        source,
                    )
                )
            return events
        except (ValueError, TypeError) as exc:
            detail = f"a change cannot be read ({type(exc).__name__}: {exc}): {raw!r:.200}"
            raise SessionBackendError(self._name, detail) from exc

    def _reply(self, what: str, reply: object) -> list[Any]:
        """A script's reply that must be a non-empty list."""
        if not isinstance(reply, list) or not reply:
            raise SessionBackendError(self._name, f"{what}: an unexpected reply {reply!r:.200}")
        return reply

    async def register_variable(self, session_id: str, record: VariableRecord, now: float) -> None:
        """Add ``record`` to the session (one script).

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableExists: the session has a variable of that name.
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = self._write_keys(session_id)
        args = [*self._write_args(session_id, now), record.name]
        args += [_encode_variable(record), record.source]
        done = await self._run(
            "register_variable", lambda: self._register_variable(keys=keys, args=args)
        )
        if done is None:
            raise SessionNotFound(session_id)
        if done == 0:
            raise VariableExists(session_id, record.name)

    async def get_variables(
        self, session_id: str, names: Sequence[str] | None, now: float
    ) -> dict[str, VariableRecord]:
        """The records of ``names`` (None: every variable of the session), one script.

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: one of ``names`` is not there.
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self.variables_key(session_id)]
        wanted = None if names is None else list(names)
        args = [session_id, _score(now)]
        args += ["all"] if wanted is None else ["names", *wanted]
        reply = await self._run("get_variables", lambda: self._get_variables(keys=keys, args=args))
        if reply is None:
            raise SessionNotFound(session_id)
        found = self._reply("get_variables", reply)
        if found[0] == 0:
            assert wanted is not None
            raise VariableNotFound(session_id, wanted[int(found[1])])
        records = [self._decode_variable(raw) for raw in found[1:]]
        if wanted is None:
            return {record.name: record for record in records}
        return dict(zip(wanted, records, strict=True))

    async def set_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        expect: Expectations,
        now: float,
        source: str,
    ) -> dict[str, VariableRecord] | None:
        """Write every encoded value of ``values``, all or none, each version +1 (one script).

        :returns: the new records; None (nothing written) if an expectation
            in ``expect`` does not hold.
        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: a name of ``values`` is not there (nothing written).
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        names = list(values)
        keys = self._write_keys(session_id)
        args = [*self._write_args(session_id, now), source, str(len(names))]
        for name in names:
            args += [name, json.dumps(values[name], separators=(",", ":"))]
        for name, (uid, version) in expect.items():
            args += [name, uid, "" if version is None else str(version)]
        reply = await self._run("set_variables", lambda: self._set_variables(keys=keys, args=args))
        if reply is None:
            raise SessionNotFound(session_id)
        written = self._reply("set_variables", reply)
        if written[0] == 0:
            raise VariableNotFound(session_id, names[int(written[1])])
        if written[0] == -1:
            return None
        records = [self._decode_variable(raw) for raw in written[1:]]
        return dict(zip(names, records, strict=True))

    async def delete_variable(
        self, session_id: str, name: str, now: float, source: str
    ) -> VariableRecord:
        """Remove ``name``; return its last record (one script).

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: it is not there.
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = self._write_keys(session_id)
        args = [*self._write_args(session_id, now), name, source]
        raw = await self._run(
            "delete_variable", lambda: self._delete_variable(keys=keys, args=args)
        )
        if raw is None:
            raise SessionNotFound(session_id)
        if raw == 0:
            raise VariableNotFound(session_id, name)
        return self._decode_variable(raw)

    @asynccontextmanager
    async def watch_variables(
        self, session_id: str, names: frozenset[str] | None, buffer: int
    ) -> AsyncIterator[AsyncIterator[VariableEvent]]:
        """Changes of ``names`` (None: all) of the session from now on, in order.

        A connection of its own, subscribed to the session's channel before
        this returns; closed on exit. The iterator ends when the session is
        deleted or swept. Each time it has nothing left to give, it asks
        Redis (a PING on that connection) for everything published so far:
        more than ``buffer`` changes then, and the watch is ended with
        :class:`~snakepit.errors.VariableError` once it has given the first
        ``buffer`` of them. A write published by reference (a large one) is
        read (a GET) when the iteration comes to it; if its key has expired
        by then (:data:`CHANGE_TTL`), the watch is ended with
        :class:`~snakepit.errors.VariableError` too, as one that fell behind.

        :raises SessionNotFound: no such session.
        :raises SessionBackendError: Redis is unreachable or answered an error
            (from the iteration too: a connection lost meanwhile, as changes
            may have been missed with it).
        """
        pubsub = self._client.pubsub()
        channel = self.variables_channel(session_id)

        opened = False

        async def subscribe() -> bool:
            nonlocal opened
            opened = True
            await pubsub.subscribe(channel)
            # Its confirmation: every change made from here on reaches this connection.
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "subscribe":
                    break
            return bool(await self._client.hexists(self._hash, session_id))

        try:
            if not await self._run("watch_variables", subscribe):
                raise SessionNotFound(session_id)
            yield _Events(self, pubsub, session_id, names, buffer)
        finally:
            if opened:  # else never tried (say, not asyncio): nothing to close
                with anyio.CancelScope(shield=True):
                    await self._run("watch_variables", pubsub.aclose)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A write published by reference: the key of its changes, and how many of them to give."""

    key: str
    take: int


class _Events:
    """A watch's events from Redis (an iterator, not a generator: nothing to finalize).

    ``_pending`` holds events, and writes published by reference not read yet
    (each counts as the changes of it the watch gives: its message names them).
    """

    __slots__ = (
        "_backend",
        "_behind",
        "_buffer",
        "_count",
        "_ended",
        "_error",
        "_names",
        "_pending",
        "_pings",
        "_pubsub",
        "_session_id",
    )

    def __init__(
        self,
        backend: RedisBackend,
        pubsub: PubSub,
        session_id: str,
        names: frozenset[str] | None,
        buffer: int,
    ) -> None:
        self._backend = backend
        self._pubsub = pubsub
        self._session_id = session_id
        self._names = names
        self._buffer = buffer
        self._pending: deque[VariableEvent | _Ref] = deque()
        self._count = 0  # the events _pending holds or refers to
        self._ended = False  # its session ended, or it fell behind: no more reads
        self._behind: str | None = None  # why it fell behind (once it has given the rest)
        self._error: SessionBackendError | None = None
        self._pings = itertools.count()

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> VariableEvent:
        while True:
            while not self._pending:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    if self._behind is not None:
                        raise VariableError(self._behind)
                    raise StopAsyncIteration
                await self._backend._run("watch_variables", self._read)
            head = self._pending[0]
            if isinstance(head, _Ref):
                await self._fetch(head)
                continue
            self._pending.popleft()
            self._count -= 1
            return head

    async def _fetch(self, ref: _Ref) -> None:
        """Put the changes of ``ref`` (the first in _pending) in its place (a GET)."""
        client = self._backend._client
        raw = await self._backend._run("watch_variables", lambda: client.get(ref.key))
        if raw is None:  # expired (or deleted): a change missed, so it ends here
            self._pending.clear()
            self._count = 0
            self._ended = True
            self._behind = (
                f"a watch of session {self._session_id!r} fell too far behind: a large"
                f" change it had not read yet was kept {self._backend._change_ttl:g} s"
                " and is gone; the watch was ended"
            )
            raise VariableError(self._behind)
        events = self._backend._decode_events(raw)
        wanted = [event for event in events if self._wanted(event.name)][: ref.take]
        self._pending.popleft()
        self._pending.extendleft(reversed(wanted))
        self._count -= ref.take - len(wanted)  # as many as its message named, unless altered

    def _wanted(self, name: str) -> bool:
        return self._names is None or name in self._names

    async def _read(self) -> None:
        """Take what was published so far (how far behind it is); if none, wait for more."""
        token = f"snakepit-sync-{next(self._pings)}"
        await self._pubsub.ping(token)
        while not self._ended:
            message = await self._pubsub.get_message(timeout=None)
            if message is None:
                continue
            if message["type"] == "pong":
                if message["data"] in (token, token.encode()):
                    break
                continue  # an earlier read's, left when it was cancelled
            self._take(message)
        if self._pending or self._ended:
            return
        message = await self._pubsub.get_message(timeout=None)
        if message is not None:
            self._take(message)

    def _take(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribe":  # subscribed again: its connection was made again
            self._error = SessionBackendError(
                self._backend._name,
                f"a watch of session {self._session_id!r} lost its connection"
                " (changes may have been missed) and was ended",
            )
            self._ended = True
            raise self._error
        if kind != "message":
            return
        data = message["data"]
        if data in (_END, _END.decode()):
            self._ended = True
            return
        decoded = self._backend._decode_message(data)
        if isinstance(decoded, tuple):
            key, names = decoded
            self._refer(key, sum(1 for name in names if self._wanted(name)))
            return
        for event in decoded:
            if not self._wanted(event.name):
                continue
            if self._count >= self._buffer:
                self._fell_behind()
                return
            self._pending.append(event)
            self._count += 1

    def _refer(self, key: str, wanted: int) -> None:
        """Queue the write at ``key``, ``wanted`` changes of it watched (up to the buffer)."""
        take = min(wanted, self._buffer - self._count)
        if take > 0:
            self._pending.append(_Ref(key, take))
            self._count += take
        if take < wanted:
            self._fell_behind()

    def _fell_behind(self) -> None:
        self._ended = True
        self._behind = (
            f"a watch of session {self._session_id!r} fell more than"
            f" {self._buffer} changes behind and was ended"
        )
