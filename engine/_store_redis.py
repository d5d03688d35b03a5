"""The Redis store (Valkey speaks the same protocol): one server, many machines.

``redis://[user:password@]host:6379/0`` (``rediss://`` with TLS, ``unix:///path``),
with options in the query string::

    redis://host:6379/0?prefix=cytask&max_lost=10&retry_for=10

- ``prefix``: the keys' namespace (several apps, or tests, share one server).
- ``max_lost``: a task whose worker died this many times fails (a poison pill).
- ``retry_for``: seconds a call keeps retrying while Redis is unreachable, then
  raises `StoreError`; ``inf`` blocks until Redis is back.
- any other option is redis-py's (``socket_timeout``, ``health_check_interval``, ...).

Design: each task is a hash; READY tasks wait in one list per priority, delayed
and retrying ones in a sorted set by due time, leases in a sorted set by
``lease_until``, ended tasks in a sorted set by finish time (for ``expire``) and
FAILED ones in another (the dead letters).  Every ``Store`` method is one Lua
script, so it is one atomic step, as an SQLite transaction is: claim moves a task
from a list to RUNNING with its lease, finish checks the owner, release gives a
claim back without counting the attempt, recovery counts a loss and dead-letters
at ``max_lost``.  Why not Streams with consumer groups?  Their idle-time reclaim
(XAUTOCLAIM) cannot see a lease its owner extends, their delivery counter counts
heartbeat claims too, a stream entry cannot be cancelled, scheduled or given
progress, and priorities need a stream each: each of those would need this very
hash beside the stream, kept in step across two structures.  Idle workers still
wait without polling: a PUBLISH on ``<prefix>:wake`` wakes their feeder, which
sleeps on the subscription's socket.

What survives what: a write Redis acknowledged survives a restart of Redis as far
as Redis' own persistence goes (``appendonly yes`` with ``appendfsync everysec``
loses at most a second on a crash of Redis' machine; ``always`` nothing).  Keys
have no TTL: ``expire`` (the engines' ``result_ttl``, run by every consuming engine)
deletes ended tasks in a script, because a key that Redis expires on its own would
leave the counts, the finished index and the dead letters pointing at nothing.
Clocks: leases and due times are kept on the server's clock (each script reads
TIME, see ``_CLOCK``); finish times and ticks are the clients' ``time.time()``: keep
machines in sync (NTP).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from cytask._store import (
    STATE_NAMES,
    TICK_KEEP_S,
    Claimed,
    Finish,
    NewTask,
    Store,
    StoreError,
    TaskRecord,
    Watch,
    number_option,
)

__all__ = ["RedisStore"]

T = TypeVar("T")

_OWN_OPTIONS = ("prefix", "max_lost", "retry_for")
#: ids per script call in bulk steps (promote, recover, expire): each call is short
_STEP = 1000
#: error replies that say "not now" rather than "never", which redis-py leaves as text
#: (the others it maps to classes: see RedisStore._not_now)
_TRANSIENT = ("BUSY", "NOREPLICAS")

# A task's hash fields: n name, c codec, p payload, pr priority, s state, a attempts,
# l lost, ml max_lost, ra run_at, eq enqueued_at, st started_at, fi finished_at,
# o owner, lu lease_until, r result, e error, pg progress, pm progress message,
# cx "1" once cancel was requested while it ran.
# Keys: P:t:<id> (hash), P:ready:<0..3> (lists of ids), P:due (zset by due time),
# P:lease (zset by lease end; both on the server's clock, see _CLOCK), P:done (zset by
# finished_at), P:failed (the dead letters, zset by finished_at), P:count (hash:
# state -> tasks), P:ticks (zset), P:cancel (set: ids whose cancel was requested while
# running; stale ids are dropped when read).
# States (as in _store): 0 READY, 1 SCHEDULED, 2 RUNNING, 3 RETRYING, 4 SUCCEEDED,
# 5 FAILED, 6 CANCELLED.  A list may hold the id of a task cancelled while READY:
# claim skips any id whose state is not READY.

# Leases and due times are kept on the Redis server's clock, read by each script
# (TIME): a client passes its own times with its own "now", and a script moves them by
# the difference.  On the clients' clocks, a worker whose clock ran a minute ahead
# recovered every live lease at once (each task ran again) and promoted delayed tasks
# early; one running behind lost its own leases.  Finish times (``fi``, ``expire``)
# and the recorded ``ra`` stay on the clients' clocks (displays, result_ttl).
_CLOCK = """
local function _clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function _num(x)  -- a score as text, to the microsecond
  return string.format('%.6f', x)
end
"""

_ENQUEUE = """
local P, now, owner, lu = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local nnow = tonumber(now)
local skew = _clock() - nnow
lu = _num(tonumber(lu) + skew)
local counts = {0, 0, 0, 0, 0, 0, 0}
local news = 0
for i = 5, #ARGV, 7 do
  local id, pr, ra = ARGV[i], ARGV[i + 4], ARGV[i + 5]
  local key = P .. ':t:' .. id
  if redis.call('EXISTS', key) == 0 then  -- a retried call adds nothing twice
    local state
    if tonumber(ra) > nnow then
      state = 1
      redis.call('ZADD', P .. ':due', _num(tonumber(ra) + skew), id)
    elseif owner ~= '' then
      state = 2
      redis.call('ZADD', P .. ':lease', lu, id)
    else
      state = 0
      redis.call('RPUSH', P .. ':ready:' .. pr, id)
    end
    redis.call('HSET', key, 'n', ARGV[i + 1], 'c', ARGV[i + 2], 'p', ARGV[i + 3],
      'pr', pr, 's', state, 'a', 0, 'l', 0, 'ml', ARGV[i + 6], 'ra', ra, 'eq', now,
      'pg', 0)
    if state == 2 then
      redis.call('HSET', key, 'a', 1, 'o', owner, 'lu', lu, 'st', now)
    else
      news = news + 1
    end
    counts[state + 1] = counts[state + 1] + 1
  end
end
for s = 1, 7 do
  if counts[s] > 0 then redis.call('HINCRBY', P .. ':count', s - 1, counts[s]) end
end
if news > 0 then redis.call('PUBLISH', P .. ':wake', news) end
return 0
"""

_CLAIM = """
local P, owner, n, lu, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
lu = _num(tonumber(lu) + _clock() - tonumber(now))
local out, got = {}, 0
for pr = 0, 3 do
  local q = P .. ':ready:' .. pr
  while got < n do
    local id = redis.call('LPOP', q)
    if not id then break end
    local key = P .. ':t:' .. id
    if redis.call('HGET', key, 's') == '0' then
      local a = redis.call('HINCRBY', key, 'a', 1)
      redis.call('HSET', key, 's', 2, 'o', owner, 'lu', lu, 'st', now)
      redis.call('ZADD', P .. ':lease', lu, id)
      local f = redis.call('HMGET', key, 'n', 'c', 'p', 'pr', 'l')
      out[#out + 1] = {id, f[1], f[2], f[3], f[4], a, f[5]}
      got = got + 1
    end
  end
end
if got > 0 then
  redis.call('HINCRBY', P .. ':count', 0, -got)
  redis.call('HINCRBY', P .. ':count', 2, got)
end
return out
"""

_EXTEND = """
local P, owner, lu, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
lu = _num(tonumber(lu) + _clock() - tonumber(now))
local held = 0
for i = 5, #ARGV do
  local key = P .. ':t:' .. ARGV[i]
  local f = redis.call('HMGET', key, 's', 'o')
  if f[1] == '2' and f[2] == owner then
    redis.call('HSET', key, 'lu', lu)
    redis.call('ZADD', P .. ':lease', lu, ARGV[i])
    held = held + 1
  end
end
return held
"""

_FINISH = """
local P, owner, now, cnow = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local skew = _clock() - tonumber(cnow)
local done, counts = 0, {0, 0, 0, 0, 0, 0, 0}
for i = 5, #ARGV, 6 do
  local id, state, result, err, ra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local att = ARGV[i + 5]  -- the run's attempt (a fencing token); '0': the owner only
  local key = P .. ':t:' .. id
  local f = redis.call('HMGET', key, 's', 'o', 'a')
  if f[1] == '2' and f[2] == owner and (att == '0' or f[3] == att) then
    redis.call('HDEL', key, 'o', 'lu')
    redis.call('ZREM', P .. ':lease', id)
    redis.call('HSET', key, 's', state)
    if result ~= '' then redis.call('HSET', key, 'r', result) end
    if err ~= '' then redis.call('HSET', key, 'e', err) end
    if state == '3' then
      redis.call('HSET', key, 'ra', ra)
      redis.call('ZADD', P .. ':due', _num(tonumber(ra) + skew), id)
    else
      redis.call('HSET', key, 'fi', now, 'ra', 0)
      redis.call('ZADD', P .. ':done', now, id)
      if state == '5' then redis.call('ZADD', P .. ':failed', now, id) end
    end
    local s = tonumber(state)
    counts[s + 1] = counts[s + 1] + 1
    done = done + 1
  end
end
if done > 0 then
  redis.call('HINCRBY', P .. ':count', 2, -done)
  for s = 1, 7 do
    if counts[s] > 0 then redis.call('HINCRBY', P .. ':count', s - 1, counts[s]) end
  end
  if counts[4] > 0 then redis.call('PUBLISH', P .. ':wake', 0) end  -- a retry is due later
end
return done
"""

_RELEASE = """
local P, owner = ARGV[1], ARGV[2]
local n = 0
for i = #ARGV, 3, -1 do  -- the last first: LPUSH puts the first one at the front
  local id = ARGV[i]
  local key = P .. ':t:' .. id
  local f = redis.call('HMGET', key, 's', 'o', 'pr')
  if f[1] == '2' and f[2] == owner then
    redis.call('HINCRBY', key, 'a', -1)
    redis.call('HSET', key, 's', 0)
    redis.call('HDEL', key, 'o', 'lu', 'st')
    redis.call('ZREM', P .. ':lease', id)
    redis.call('LPUSH', P .. ':ready:' .. f[3], id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', P .. ':count', 2, -n)
  redis.call('HINCRBY', P .. ':count', 0, n)
  redis.call('PUBLISH', P .. ':wake', n)
end
return n
"""

_CANCEL = """
local P, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = P .. ':t:' .. id
local s = redis.call('HGET', key, 's')
if s ~= '0' and s ~= '1' and s ~= '3' then return 0 end
redis.call('HSET', key, 's', 6, 'fi', now)
redis.call('ZREM', P .. ':due', id)  -- a READY one stays in its list: claim skips it
redis.call('ZADD', P .. ':done', now, id)
redis.call('HINCRBY', P .. ':count', s, -1)
redis.call('HINCRBY', P .. ':count', 6, 1)
return 1
"""

_REQUEST_CANCEL = """
local P, id = ARGV[1], ARGV[2]
local key = P .. ':t:' .. id
if redis.call('HGET', key, 's') ~= '2' then return 0 end
redis.call('HSET', key, 'cx', 1)
redis.call('SADD', P .. ':cancel', id)
return 1
"""

_CANCEL_REQUESTS = """
local P, owner = ARGV[1], ARGV[2]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':cancel')) do
  local f = redis.call('HMGET', P .. ':t:' .. id, 's', 'o')
  if f[1] ~= '2' then
    redis.call('SREM', P .. ':cancel', id)  -- it ended, or its worker died
  elseif f[2] == owner then
    out[#out + 1] = id
  end
end
return out
"""

_SET_PROGRESS = """
local key = ARGV[1] .. ':t:' .. ARGV[2]
local f = redis.call('HMGET', key, 's', 'o', 'a')
if f[1] ~= '2' then return 0 end
-- a run's own report: only while that run holds the task (owner and attempt)
if ARGV[6] ~= '' and (f[2] ~= ARGV[6] or f[3] ~= ARGV[7]) then return 0 end
redis.call('HSET', key, 'pg', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', key, 'pm', ARGV[5])
else
  redis.call('HDEL', key, 'pm')
end
return 1
"""

_PROMOTE = """
local P, limit = ARGV[1], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', P .. ':due', '-inf', _num(_clock()), 'LIMIT', 0, limit)
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':due', id)
  local key = P .. ':t:' .. id
  local f = redis.call('HMGET', key, 's', 'pr')
  if f[1] == '1' or f[1] == '3' then
    redis.call('HSET', key, 's', 0)
    redis.call('RPUSH', P .. ':ready:' .. f[2], id)
    redis.call('HINCRBY', P .. ':count', f[1], -1)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', P .. ':count', 0, n)
  redis.call('PUBLISH', P .. ':wake', n)
end
return {n, #ids}
"""

_RECOVER = """
local P, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', P .. ':lease', '-inf', '(' .. _num(_clock()), 'LIMIT', 0,
  limit)
local back, failed = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':lease', id)
  local key = P .. ':t:' .. id
  local f = redis.call('HMGET', key, 's', 'pr', 'ml')
  if f[1] == '2' then
    local lost = redis.call('HINCRBY', key, 'l', 1)
    redis.call('HDEL', key, 'o', 'lu')
    if lost >= tonumber(f[3]) then
      redis.call('HSET', key, 's', 5, 'fi', now, 'e', cjson.encode({
        type = 'cytask.WorkerLost', traceback = '',
        message = 'its worker died (lease expired) ' .. lost .. ' times while running it'}))
      redis.call('ZADD', P .. ':done', now, id)
      redis.call('ZADD', P .. ':failed', now, id)
      failed = failed + 1
    else
      redis.call('HSET', key, 's', 0)
      redis.call('LPUSH', P .. ':ready:' .. f[2], id)
      back = back + 1
    end
  end
end
if back + failed > 0 then
  redis.call('HINCRBY', P .. ':count', 2, -(back + failed))
  redis.call('HINCRBY', P .. ':count', 0, back)
  redis.call('HINCRBY', P .. ':count', 5, failed)
end
if back > 0 then redis.call('PUBLISH', P .. ':wake', back) end
return {back + failed, #ids}
"""

_EXPIRE = """
local P, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', P .. ':done', '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local key = P .. ':t:' .. id
  local s = redis.call('HGET', key, 's')
  if s then redis.call('HINCRBY', P .. ':count', s, -1) end
  redis.call('DEL', key)
  redis.call('ZREM', P .. ':done', id)
  redis.call('ZREM', P .. ':failed', id)
end
return #ids
"""

_NEXT_DUE = """
local first = redis.call('ZRANGE', ARGV[1] .. ':due', 0, 0, 'WITHSCORES')
if #first == 0 then return {} end
local t = redis.call('TIME')
return {first[2], t[1], t[2]}
"""

_REQUEUE = """
local P, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = P .. ':t:' .. id
local f = redis.call('HMGET', key, 's', 'pr')
if f[1] ~= '5' then return 0 end
redis.call('HSET', key, 's', 0, 'a', 0, 'l', 0, 'ra', now)
redis.call('HDEL', key, 'r', 'e', 'st', 'fi', 'o', 'lu', 'cx')
redis.call('ZREM', P .. ':done', id)
redis.call('ZREM', P .. ':failed', id)
redis.call('RPUSH', P .. ':ready:' .. f[2], id)
redis.call('HINCRBY', P .. ':count', 5, -1)
redis.call('HINCRBY', P .. ':count', 0, 1)
redis.call('PUBLISH', P .. ':wake', 1)
return 1
"""

_FIELDS = (
    "n", "c", "pr", "s", "a", "l", "ra", "eq", "st", "fi", "r", "e", "pg", "pm", "o", "cx", "p"
)  # fmt: skip


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def _float(b: bytes | None) -> float | None:
    return None if b is None else float(b)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split cytask's own options off a Redis URL: (URL for redis-py, options).

    ``valkey://`` and ``valkeys://`` are read as ``redis://`` and ``rediss://``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("valkey", "valkeys"):
        parts = parts._replace(scheme=parts.scheme.replace("valkey", "redis"))
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(
            f"Expected a database number after the host for store (redis://host:6379/0), "
            f"got {parts.path!r} in {url!r}"
        )
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_OPTIONS}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in _OWN_OPTIONS])
    # by hand, not urlunsplit: that drops the "//" of a URL without a host for schemes
    # it does not know (unix:///run/redis.sock became unix:/run/redis.sock, refused)
    return f"{parts.scheme}://{parts.netloc}{parts.path}{'?' if rest else ''}{rest}", own


class _PubSubWatch(Watch):
    """The feeder's sleep: the socket of a subscription to ``<prefix>:wake``.

    A broken subscription (Redis restarted) shows as ``fd == -1`` (the feeder polls
    meanwhile); ``drain`` subscribes again, at most twice a second.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._pubsub: Any = None
        self._next_try = 0.0
        self.fd = -1
        self._subscribe()

    def _subscribe(self) -> None:
        self._next_try = time.monotonic() + 0.5
        pubsub = None
        try:
            pubsub = self._store._redis.pubsub()
            pubsub.subscribe(self._store._wake_channel)
            # subscribed once Redis confirms: a commit after this returns is seen
            deadline = time.monotonic() + 5.0
            while True:
                reply = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if reply is not None and reply["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError("no subscribe confirmation from Redis within 5 s")
            sock = pubsub.connection._sock  # redis-py keeps it there; None if it changes
            fd = sock.fileno() if sock is not None else -1
        except Exception:  # Redis away: the feeder polls, and drain() tries again
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    pubsub.close()
            return
        self._pubsub, self.fd = pubsub, fd

    def _drop(self) -> None:
        pubsub, self._pubsub, self.fd = self._pubsub, None, -1
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def drain(self) -> bool:
        if self._pubsub is None:
            if time.monotonic() >= self._next_try:
                self._subscribe()
            return True  # maybe missed: look
        hit = False
        try:  # to the last one: a reply left in redis-py's buffer would not wake select()
            while (reply := self._pubsub.get_message(timeout=0.0)) is not None:
                hit = hit or reply["type"] == "message"
        except Exception:  # the connection broke: what was published meanwhile is lost
            self._drop()
            return True
        return hit

    def close(self) -> None:
        self._drop()


class RedisStore(Store):
    """A ``Store`` on a Redis (or Valkey) server.  See the module docstring."""

    durable_on_power_loss = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        max_lost: int | None = None,
        retry_for: float | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(
                "the Redis store needs the redis package: pip install 'cytask[redis]'"
            ) from None
        client_url, options = parse_url(url)
        self.url = url
        self.prefix = prefix if prefix is not None else options.get("prefix", "cytask")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"Expected a non-empty prefix without spaces, got {self.prefix!r}")
        self.max_lost = number_option(int, "max_lost", max_lost, options, 10, url)
        if self.max_lost < 1:
            raise ValueError(f"Expected max_lost >= 1, got {self.max_lost}")
        self.retry_for = number_option(float, "retry_for", retry_for, options, 10.0, url)
        if not self.retry_for >= 0:
            raise ValueError(f"Expected retry_for >= 0 seconds (or inf), got {self.retry_for}")
        self._errors: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )
        # a ConnectionError to redis-py, but no outage: the URL's credentials are refused
        self._refused: tuple[type[BaseException], ...] = (
            redis.AuthenticationError,
            redis.exceptions.AuthorizationError,
        )
        self._redis_error: type[BaseException] = redis.RedisError
        self._response_error: type[BaseException] = redis.ResponseError
        self._no_script: type[BaseException] = redis.exceptions.NoScriptError
        x = redis.exceptions  # refusals that say "not now": failover, maxmemory, a cluster
        self._not_now: tuple[type[BaseException], ...] = (
            x.OutOfMemoryError, x.ReadOnlyError, x.TryAgainError, x.ClusterDownError,
            x.MasterDownError,
        )  # fmt: skip
        try:
            # typed Any: redis-py annotates replies for every client mode at once
            # keepalive is TCP's: a unix socket's connection refuses the argument
            tcp = {} if client_url.startswith("unix:") else {"socket_keepalive": True}
            self._redis: Any = redis.Redis.from_url(client_url, socket_connect_timeout=5.0, **tcp)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Expected a valid Redis URL for store, got {url!r}: {exc}") from exc
        self._wake_channel = f"{self.prefix}:wake"
        self._closed = False
        self._retry_until = math.inf  # see retry_until()
        self._watches: list[_PubSubWatch] = []
        self._lock = threading.Lock()  # guards _watches
        scripts = {
            "enqueue": _ENQUEUE, "claim": _CLAIM, "extend": _EXTEND, "finish": _FINISH,
            "release": _RELEASE, "cancel": _CANCEL, "set_progress": _SET_PROGRESS,
            "promote": _PROMOTE, "recover": _RECOVER, "expire": _EXPIRE, "requeue": _REQUEUE,
            "request_cancel": _REQUEST_CANCEL, "cancel_requests": _CANCEL_REQUESTS,
            "next_due": _NEXT_DUE,
        }  # fmt: skip
        scripts = {k: _CLOCK + v if "_clock()" in v else v for k, v in scripts.items()}
        self._sources = scripts
        self._scripts = {name: self._redis.register_script(src) for name, src in scripts.items()}
        self._call("open", self._redis.ping)
        policy = self._config("maxmemory-policy")
        if policy is not None and policy.startswith("allkeys-"):
            self._redis.close()
            raise StoreError(
                f"store {url!r}: this Redis evicts keys when it is full (maxmemory-policy "
                f"{policy}): acknowledged tasks would vanish without a trace; set "
                f"maxmemory-policy noeviction (redis.conf, or CONFIG SET), or give the "
                f"tasks a Redis of their own (a cache's Redis is configured to forget)"
            )  # volatile-* evicts only keys with a TTL: the store sets none
        self.max_value = self._bulk_limit()

    max_value_source = "Redis' proto-max-bulk-len"

    def reread_limits(self) -> None:
        self.max_value = self._bulk_limit()

    def retry_until(self, deadline: float) -> None:
        self._retry_until = deadline

    def _config(self, name: str) -> str | None:
        """A server setting, None where CONFIG is not allowed (ACL, a managed Redis)."""
        try:
            found = self._redis.config_get(name)
        except Exception:
            return None
        value = found.get(name, found.get(name.encode()))
        return value.decode() if isinstance(value, bytes) else value

    def _bulk_limit(self) -> int:
        """The server's proto-max-bulk-len: no argument of a command may be longer (512
        MB unless configured; that too where CONFIG is not allowed)."""
        try:
            return int(self._config("proto-max-bulk-len") or 512 * 1024 * 1024)
        except ValueError:
            return 512 * 1024 * 1024

    def __repr__(self) -> str:
        return f"<RedisStore {self.url!r} prefix={self.prefix!r}>"

    # -- calls, retries and errors -------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One call to Redis, retried while the server is unreachable (``retry_for``).

        Every script is safe to run twice (a reply lost on the wire): enqueue skips
        ids it has, the others look at the state before they change it.
        """
        if self._closed:
            raise StoreError(f"store {self.url!r} is closed")
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                return fn(*args)
            except self._refused as exc:  # no retry: a wrong password stays wrong
                self._raise(exc, what, refused=True)
            except self._errors as exc:
                left = min(deadline, self._retry_until) - time.monotonic()
                if left <= 0 or self._closed:
                    self._raise(exc, what, unreachable=True)
                time.sleep(min(pause, left))
                pause = min(pause * 2, 1.0)
            except self._redis_error as exc:
                self._raise(exc, what)

    def _raise(
        self, exc: BaseException, what: str, *, unreachable: bool = False, refused: bool = False
    ) -> NoReturn:
        if refused:
            why = (
                f"Redis refused the credentials of the store URL ({exc}); put the server's "
                f"user and password in it: redis://user:password@host:6379/0 "
                f"(redis://:password@host:6379/0 without ACL users)"
            )
        elif "DB index is out of range" in str(exc):
            db = self._redis.connection_pool.connection_kwargs.get("db", 0)
            why = (
                f"{exc}: the database number {db} in the store URL is past the server's "
                f"`databases` setting (16 unless configured; 0 is the first)"
            )
        elif "invalid bulk length" in str(exc):
            why = (
                f"{exc}: a task's arguments or result are larger than the server takes "
                f"(its proto-max-bulk-len, 512 MB unless configured)"
            )
        elif unreachable:
            for_ = "" if math.isinf(self.retry_for) else f" for {self.retry_for:g} s"
            why = (
                f"Redis was unreachable{for_} ({exc}); start it, or raise retry_for in the "
                f"store URL (retry_for=inf waits for it)"
            )
        else:
            why = str(exc)
        err = StoreError(f"store {self.url!r}: {what} failed: {why}")
        # a refusal the same call may get past later: a failover, memory, a busy script
        err.transient = (
            unreachable or isinstance(exc, self._not_now) or str(exc).startswith(_TRANSIENT)
        )
        raise err from exc

    def _script(self, name: str, args: list[Any]) -> Any:
        return self._call(name, self._evalsha, name, args)

    def _evalsha(self, name: str, args: list[Any]) -> Any:
        """EVALSHA on a pooled connection, without the client's per-command layers
        (half the time of a one-task commit); loads the script if Redis lost it."""
        pool = self._redis.connection_pool
        conn = pool.get_connection()
        try:
            sha = self._scripts[name].sha
            conn.send_command("EVALSHA", sha, 0, self.prefix, *args)
            try:
                return conn.read_response()
            except self._no_script:  # Redis restarted: its script cache is empty
                conn.send_command("SCRIPT", "LOAD", self._sources[name])
                conn.read_response()
                conn.send_command("EVALSHA", sha, 0, self.prefix, *args)
                return conn.read_response()
        except self._response_error:
            raise  # the reply was read whole: the connection is fine
        except BaseException:
            conn.disconnect()  # a reply half read must not reach the next caller
            raise
        finally:
            pool.release(conn)

    # -- the Store interface -----------------------------------------------------------

    def enqueue(
        self, tasks: Sequence[NewTask], *, owner: str | None = None, lease_until: float = 0.0
    ) -> None:
        if not tasks:
            return
        now = repr(time.time())
        head = [now, owner or "", repr(lease_until)]
        if len(tasks) <= _STEP:
            self._script("enqueue", head + _flat_tasks(tasks))
            return
        # one transaction (MULTI/EXEC): all or nothing, as one SQLite commit is
        script = self._scripts["enqueue"]

        def send() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                for i in range(0, len(tasks), _STEP):
                    script([], [self.prefix, *head, *_flat_tasks(tasks[i : i + _STEP])], pipe)
                pipe.execute()

        self._call("enqueue", send)

    def claim(self, owner: str, n: int, lease_until: float) -> list[Claimed]:
        rows = self._script("claim", [owner, n, repr(lease_until), repr(time.time())])
        out = []
        for tid, name, codec, payload, prio, attempts, lost in rows:
            c = codec.decode()
            data = payload.decode() if c == "json" else payload
            out.append(
                Claimed(tid.decode(), name.decode(), c, data, int(prio), int(attempts), int(lost))
            )
        return out

    def extend(self, owner: str, ids: Sequence[str], lease_until: float) -> int:
        if not ids:
            return 0
        return int(self._script("extend", [owner, repr(lease_until), repr(time.time()), *ids]))

    def finish(self, owner: str, done: Sequence[Finish], now: float) -> int:
        if not done:
            return 0
        args: list[Any] = [owner, repr(now), repr(time.time())]
        for f in done:
            if f.result is not None and not f.result:
                raise ValueError(f"task {f.id}: an encoded result is never empty")
            args += [f.id, f.state, f.result or "", f.error or "", repr(f.run_at), f.attempt]
        return int(self._script("finish", args))

    def release(self, owner: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(self._script("release", [owner, *ids]))

    def cancel(self, task_id: str, now: float) -> bool:
        return bool(self._script("cancel", [task_id, repr(now)]))

    def request_cancel(self, task_id: str) -> bool:
        return bool(self._script("request_cancel", [task_id]))

    def cancel_requests(self, owner: str) -> list[str]:
        return [tid.decode() for tid in self._script("cancel_requests", [owner])]

    def get(self, task_id: str) -> TaskRecord | None:
        f = self._call("get", self._redis.hmget, f"{self.prefix}:t:{task_id}", _FIELDS)
        return None if f[0] is None else _record(task_id, f)

    def set_progress(
        self,
        task_id: str,
        percent: float,
        message: str | None,
        owner: str | None = None,
        attempt: int = 0,
    ) -> None:
        has = "0" if message is None else "1"
        run = [owner, attempt] if owner is not None and attempt else ["", 0]
        self._script("set_progress", [task_id, repr(float(percent)), has, message or "", *run])

    def promote_due(self, now: float) -> int:
        total = 0
        while True:
            n, seen = self._script("promote", [repr(now), _STEP])
            total += int(n)
            if int(seen) < _STEP:
                return total

    def next_due(self) -> float | None:
        reply = self._script("next_due", [])
        if not reply:
            return None
        score, secs, micros = reply  # on the server's clock: moved to this one's
        return float(score) - (int(secs) + int(micros) / 1e6) + time.time()

    def recover_expired(self, now: float) -> int:
        total = 0
        while True:
            n, seen = self._script("recover", [repr(now), _STEP])
            total += int(n)
            if int(seen) < _STEP:
                return total

    def claim_tick(self, key: str, tick: int) -> bool:
        added = self._call(
            "claim_tick", self._redis.zadd, f"{self.prefix}:ticks", {f"{key}\n{tick}": tick}, True
        )
        return bool(added)

    def expire(self, finished_before: float) -> int:
        total = 0
        while True:
            n = int(self._script("expire", [repr(finished_before), _STEP]))
            total += n
            if n < _STEP:
                break
        cutoff = int((finished_before - TICK_KEEP_S) * 1000)
        self._call(
            "expire", self._redis.zremrangebyscore, f"{self.prefix}:ticks", "-inf", f"({cutoff}"
        )
        return total

    def has_work(self) -> bool:
        counts = self._call("has_work", self._redis.hmget, f"{self.prefix}:count", [0, 1, 2, 3])
        return any(int(c or 0) > 0 for c in counts)

    def counts(self) -> dict[str, int]:
        found = self._call("counts", self._redis.hgetall, f"{self.prefix}:count")
        by_state = {int(k): int(v) for k, v in found.items()}
        return {name: by_state.get(i, 0) for i, name in enumerate(STATE_NAMES)}

    def changed(self) -> bool:
        # the feeder drains its watch when it wakes: what is left to tell is whether
        # a subscription is broken (news may have been missed) or missing
        with self._lock:
            watches = list(self._watches)
        return not watches or any([w.drain() for w in watches])

    def dead(self, limit: int = 100) -> list[TaskRecord]:
        ids = self._call(
            "dead", self._redis.zrevrange, f"{self.prefix}:failed", 0, max(0, int(limit) - 1)
        )
        if not ids:
            return []

        def read() -> list[Any]:
            with self._redis.pipeline(transaction=False) as pipe:
                for tid in ids:
                    pipe.hmget(f"{self.prefix}:t:{tid.decode()}", _FIELDS)
                return list(pipe.execute())

        rows = self._call("dead", read)
        return [
            _record(tid.decode(), f) for tid, f in zip(ids, rows, strict=True) if f[0] is not None
        ]

    def requeue(self, task_id: str) -> bool:
        return bool(self._script("requeue", [task_id, repr(time.time())]))

    def reopen(self) -> RedisStore:
        return RedisStore(
            self.url, prefix=self.prefix, max_lost=self.max_lost, retry_for=self.retry_for
        )

    def watch(self) -> Watch:
        w = _PubSubWatch(self)
        with self._lock:
            self._watches.append(w)
        return w

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            watches, self._watches = self._watches, []
        for w in watches:
            w.close()
        with contextlib.suppress(Exception):
            self._redis.close()


def _flat_tasks(tasks: Sequence[NewTask]) -> list[Any]:
    args: list[Any] = []
    for t in tasks:
        args += [t.id, t.name, t.codec, t.payload, t.priority, repr(t.run_at), t.max_lost]
    return args


def _record(task_id: str, f: list[bytes | None]) -> TaskRecord:
    name, codec, prio, state, attempts, lost, ra, eq, st, fi, r, e, pg, pm, owner, cx, p = f
    c = _text(codec) or "json"
    return TaskRecord(
        task_id, _text(name) or "", c, int(prio or 2), int(state or 0), int(attempts or 0),
        int(lost or 0), float(ra or 0.0), float(eq or 0.0), _float(st), _float(fi),
        r.decode() if r is not None and c == "json" else r, _text(e), float(pg or 0.0),
        _text(pm), _text(owner), cx is not None,
        p.decode() if p is not None and c == "json" else p,
    )  # fmt: skip
