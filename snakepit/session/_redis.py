"""RedisBackend: sessions kept in Redis, shared by every pool that points at the same keys.

Two keys per namespace: a hash ``{NS}:sessions`` of session id -> the record
as JSON, and a sorted set ``{NS}:expiry`` of session id -> its
``expires_at`` (a record whose ``ttl`` is None is not in it), which answers
:meth:`~RedisBackend.due` with one range query. The namespace is in braces
(a Redis Cluster hash tag) so both keys live on one node and a script may
touch both. In the JSON, times are the exact ``repr()`` of their float and
the metadata is JSON text, both as strings: a script decodes a record, sets
a field and encodes it again (Redis's cjson) without changing the others.

Each method is one command or one Lua script, so atomic on the server:
:meth:`~RedisBackend.create` checks the id and the limit and writes both keys
in one script, so concurrent creates (from this process or from pools on
other hosts) never exceed the limit; :meth:`~RedisBackend.touch` and
:meth:`~RedisBackend.pin` read, check (the expiry, the pin they replace)
and write in one script, so stores on several hosts lose no update; the
sweep's delete removes a session only if it has expired by then. It runs
on asyncio only (the ``redis`` package's asyncio client); install it with
``pip install 'snakepit[redis]'``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import EllipsisType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from snakepit.errors import ArgumentTypeError, ConfigError, SessionBackendError, SessionLimitReached

from ._backend import SessionRecord

__all__ = ("RedisBackend",)

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

# KEYS as above; ARGV: id, expired_at ("": whatever its expiry). The JSON removed, or nil.
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
    breaks (a pooled connection the server closed). Pass ``client`` instead
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
            self._client = client
            self._owned = False
            where = _where(client.connection_pool.connection_kwargs)
        else:
            url = DEFAULT_URL if url is None else url
            if not isinstance(url, str):
                raise ArgumentTypeError("url", f"must be a str, got {url!r}")
            try:
                self._client = redis.asyncio.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as exc:
                raise ConfigError("url", f"{_redact(url)!r}: {exc}") from exc
            self._owned = True
            where = _redact(url)
        self._namespace = namespace
        self._hash = f"{{{namespace}}}:sessions"
        self._expiry = f"{{{namespace}}}:expiry"
        self._name = f"redis {where} namespace {namespace!r}"
        self._create = self._client.register_script(_CREATE)
        self._replace = self._client.register_script(_REPLACE)
        self._delete = self._client.register_script(_DELETE)
        self._touch = self._client.register_script(_TOUCH)
        self._pin = self._client.register_script(_PIN)
        self._due = self._client.register_script(_DUE)

    def __repr__(self) -> str:
        return f"<RedisBackend {self._name}>"

    @property
    def namespace(self) -> str:
        """The prefix of this backend's keys."""
        return self._namespace

    @property
    def keys(self) -> tuple[str, str]:
        """The two Redis keys it uses: the hash of records and the sorted set of expiry times."""
        return (self._hash, self._expiry)

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

        :returns: the record removed, or None.
        :raises SessionBackendError: Redis is unreachable or answered an error.
        """
        keys = [self._hash, self._expiry]
        args = [session_id, _score(expired_at)]
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
