"""The limits' state in Redis, shared by every worker and instance (CONTRACT 3.3).

Each check is one Lua script, `SCRIPT` below, run atomically on Redis's own clock
(`TIME`): `gcra.step` line for line on whole microseconds. Lua numbers are doubles, exact
below 2^53 (a TAT of today is about 1.8e15 µs); they are written back with `%.0f`, never
stringified by Redis (which uses `%.14g` and would drop digits). Every key expires at its TAT,
when its quota is whole again and the key means nothing.

Keys: `{<prefix>}:q:<owner>|<operation>` (quotas) and `{<prefix>}:a:<address>` (failed
authentications). The braces make the prefix a Redis Cluster hash tag: every key, and so every
script's keys, lives in one slot, on one node. The whole state is small (one number per
active key), so one node holds it. There is no cluster client: the URL must name that node
(a `MOVED` answer counts as Redis not answering).

The checks asked for in one turn of the event loop go to Redis together: one write of their
EVALSHA commands on one connection, one batch in flight at a time (the checks asked for
meanwhile form the next). Measured with 16 concurrent callers, that costs this process about
15 µs of CPU per check, against 60-90 µs for one `Script()` round trip per check.

Redis down or slow: the callers of a batch that fails, or whose round trip takes longer
than `redis_timeout`, get None (served without limits), and for `RETRY_INTERVAL` seconds
calls get None at once without touching Redis, so a dead Redis adds no latency; then the next
batch tries again, and limits return by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPoolInterface
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from cbstop.ratelimit import gcra
from cbstop.ratelimit.policy import Decision, Limit
from cbstop.ratelimit.stores import Admission, now_us
from cbstop.settings import Settings

# Seconds after a failure during which calls answer None at once.
RETRY_INTERVAL = 1.0
# Seconds between two batches' writes, at least, while the worker has other requests in
# flight. A write to Redis costs far more than the check itself (60 µs on loopback here,
# against 13 µs of a check's own work in a large batch), and at a worker's 2,000 requests a
# second checks arrive one per turn of the event loop: a batch per turn would be a write per
# check. Waiting this long after the last write lets a few share one; a lone request's check,
# or one in a quiet moment, goes at once.
BATCH_INTERVAL = 0.001
# Seconds a connection may sit unused before it is checked for a close by Redis.
IDLE_CHECK = 0.05
# Microseconds a refusal is remembered at most (its TAT may be further): then Redis is asked
# again, so that an outage is noticed (and requests served without limits) within a quarter
# second, while a client hammering past its quota costs at most four round trips a second.
REMEMBER_US = 250_000
# Addresses (and quota keys) refused lately that `blocked` (`refused`) remembers; past it,
# those whose quota is whole again go, then the oldest half.
REMEMBERED_KEYS = 10_000

# KEYS: the address key (when ARGV[3] is given), then the quota key (when ARGV[5] is).
# ARGV: mode ("admit" | "fail"), now in µs ("" = Redis's TIME), the address limit's burst
# (`Limit.burst_us`) and interval in µs, the quota's burst and interval in µs.
# Returns {kind, allowed, remaining, reset_us, retry_us}; kind 0: nothing was checked,
# 1: the address's decision, 2: the quota's.
SCRIPT = """
local function idiv(a, b)  -- a // b, exact for integers below 2^53
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function step(tat, now, burst, interval, consume)  -- gcra.step
  if tat < now then tat = now end
  local new = tat + interval
  if new - now > burst then
    return {0, 0, tat - now, new - now - burst}, tat
  end
  local remaining = idiv(burst - (new - now), interval)
  if not consume then
    return {1, remaining + 1, tat - now, 0}, tat
  end
  return {1, remaining, new - now, 0}, new
end

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function tat_of(key)
  local value = redis.call('GET', key)
  if value then return tonumber(value) end
  return now
end

local function spend(key, burst, interval)
  local decision, tat = step(tat_of(key), now, burst, interval, true)
  if decision[1] == 1 then
    redis.call('SET', key, string.format('%.0f', tat),
      'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
  end
  return decision
end

local function answer(kind, d)
  return {kind, d[1], d[2], d[3], d[4]}
end

if ARGV[1] == 'fail' then
  return answer(1, spend(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])))
end
local n = 1
if ARGV[3] ~= '' then
  local peek = step(tat_of(KEYS[1]), now, tonumber(ARGV[3]), tonumber(ARGV[4]), false)
  if peek[1] == 0 then return answer(1, peek) end
  n = 2
end
if ARGV[5] ~= '' then
  return answer(2, spend(KEYS[n], tonumber(ARGV[5]), tonumber(ARGV[6])))
end
return {0, 0, 0, 0, 0}
"""
SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


def bulk(value: str) -> bytes:
    """One argument of a command, as RESP writes it."""
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Commands:
    """The script's commands (EVALSHA with its keys and arguments), packed as RESP.

    Packed here: redis-py's `pack_command` encodes every argument of every call and cost
    more than the rest of a check (measured); only the keys (and a test's `now`) vary.
    """

    def __init__(self, prefix: str, quota: Limit | None, auth_failures: Limit | None) -> None:
        self.quota_prefix = "{" + prefix + "}:q:"
        self.address_prefix = "{" + prefix + "}:a:"
        self.quota = quota
        self.auth_failures = auth_failures
        self._head = bulk("EVALSHA") + bulk(SHA)
        self._tails: dict[tuple[str, bool, bool], bytes] = {}

    def admit(self, address: str | None, quota_key: str | None, now: str = "") -> bytes:
        """The address peeked (when given and limited), then the quota spent (likewise)."""
        keys: list[str] = []
        by_address = address is not None and self.auth_failures is not None
        if by_address:
            keys.append(self.address_prefix + str(address))
        by_quota = quota_key is not None and self.quota is not None
        if by_quota:
            keys.append(self.quota_prefix + str(quota_key))
        return self._pack(keys, self._tail("admit", by_address, by_quota, now))

    def fail(self, address: str, now: str = "") -> bytes:
        """One failure of `address` spent, or refused."""
        return self._pack([self.address_prefix + address], self._tail("fail", True, False, now))

    def _pack(self, keys: list[str], tail: bytes) -> bytes:
        parts = [b"*%d\r\n" % (len(keys) + 9), self._head, bulk(str(len(keys)))]
        parts += map(bulk, keys)
        parts.append(tail)
        return b"".join(parts)

    def _tail(self, mode: str, by_address: bool, by_quota: bool, now: str) -> bytes:
        """ARGV, packed (once, without a test's `now`)."""
        tail = None if now else self._tails.get((mode, by_address, by_quota))
        if tail is None:
            address, quota = self.auth_failures, self.quota
            args = [mode, now]
            args += (
                [str(address.burst_us), str(address.interval_us)]
                if by_address and address
                else ["", ""]
            )
            args += (
                [str(quota.burst_us), str(quota.interval_us)] if by_quota and quota else ["", ""]
            )
            tail = b"".join(map(bulk, args))
            if not now:
                self._tails[mode, by_address, by_quota] = tail
        return tail


def decision_of(reply: Sequence[int]) -> Decision:
    """The Decision in a reply of the script."""
    return Decision(bool(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))


def admission_of(reply: Sequence[int]) -> Admission:
    """The Admission in a reply of the script to an `admit`."""
    kind = reply[0]
    if kind == 1:
        return Admission(address=decision_of(reply))
    if kind == 2:
        return Admission(quota=decision_of(reply))
    return Admission()


def describe(exc: BaseException, timeout: float) -> str:
    """A short line for the warning: the error's class and first line."""
    if type(exc) is TimeoutError:  # asyncio.timeout's (redis-py's own has its message)
        return f"TimeoutError: no answer within {timeout:g} s"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RedisStore:
    """The limits in one Redis (see the module's docstring); `last_error` says why the last
    batch that failed did."""

    remote = True

    def __init__(
        self,
        settings: Settings,
        quota: Limit | None,
        auth_failures: Limit | None,
        busy: Callable[[], bool] = lambda: True,
    ):
        self.commands = Commands(settings.redis_prefix, quota, auth_failures)
        # Whether other requests are in flight in this worker: only then may a batch wait
        # for company (BATCH_INTERVAL); a lone request's check goes at once.
        self.busy = busy
        self.quota = quota
        self.auth_failures = auth_failures
        self.timeout = settings.redis_timeout
        # No retries of its own: a failed batch is served without limits, and the next
        # batch after RETRY_INTERVAL is the retry. No socket timeout either: the batch's own
        # `asyncio.timeout` bounds its round trip, and with one redis-py would wrap every write
        # in `asyncio.wait_for`, a task per batch (measured: a third of a check's CPU).
        self.client = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        self.last_error: str | None = None
        self._connection: AbstractConnection | None = None
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._down_until = -math.inf
        self._closed = False
        # When the connection last carried a batch (monotonic): past IDLE_CHECK, it is checked
        # before the next one.
        self._used_at = -math.inf
        self._sent_at = -math.inf
        # Address → its TAT on this process's clock (µs, at the earliest and the latest) while
        # it is past its budget, and until when that is trusted without asking Redis; the
        # same for quota keys.
        self._blocked: dict[str, tuple[int, int, int]] = {}
        self._refused: dict[str, tuple[int, int, int]] = {}
        # False from a failed batch until one succeeds: meanwhile requests are served without
        # limits (CONTRACT 3.3), remembered refusals included.
        self._answering = True

    async def start(self) -> None:
        """Load the script if Redis answers; if not, requests will try again (no failure)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._load(await self._connect())
        except Exception as exc:  # a Redis that is down is fine here
            self._failed(exc)
            await self._drop_connection()

    async def close(self) -> None:
        """Answer None to waiters not yet sent; let the batch in flight end (bounded by the
        timeout); close the connection."""
        self._closed = True
        sender = self._sender
        if sender is not None:
            try:
                async with asyncio.timeout(self.timeout + 1.0):
                    await asyncio.shield(sender)
            except TimeoutError:
                sender.cancel()
        self._answer_pending(None)
        if self._connection is not None:
            await self._connection.disconnect()
            await self.client.connection_pool.release(self._connection)
            self._connection = None
        await self.client.aclose()

    def blocked(self, address: str) -> Decision | None:
        return self._known(self._blocked, address, self.auth_failures)

    def refused(self, quota_key: str) -> Decision | None:
        return self._known(self._refused, quota_key, self.quota)

    async def admit(self, address: str | None, quota_key: str | None) -> Admission | None:
        if (address is None or self.auth_failures is None) and (
            quota_key is None or self.quota is None
        ):
            return Admission()
        asked = now_us()
        reply = await self.run(self.commands.admit(address, quota_key))
        if reply is None:
            return None
        admission = admission_of(reply)
        if admission.address is not None and address is not None:
            self._note(self._blocked, address, admission.address, asked, exhausted=False)
        elif admission.quota is not None and quota_key is not None:
            self._note(self._refused, quota_key, admission.quota, asked, exhausted=False)
        return admission

    async def fail(self, address: str) -> Decision | None:
        if self.auth_failures is None:
            return None
        asked = now_us()
        reply = await self.run(self.commands.fail(address))
        if reply is None:
            return None
        decision = decision_of(reply)
        exhausted = decision.remaining == 0
        self._note(self._blocked, address, decision, asked, exhausted=exhausted)
        return decision

    def _known(
        self, seen: dict[str, tuple[int, int, int]], key: str, limit: Limit | None
    ) -> Decision | None:
        """A refusal of `key` this process can make without asking Redis, if it knows one."""
        known = seen.get(key)
        if limit is None or known is None or not self._answering:
            return None
        early, late, until = known
        now = now_us()
        if now > until or gcra.step(early, now, limit, consume=False)[0].allowed:
            del seen[key]
            return None
        # Refused on the earliest the TAT can be; told (Retry-After, `t`) from the latest, so
        # a client is never asked to retry before Redis would admit it.
        return gcra.step(late, now, limit, consume=False)[0]

    def _note(
        self,
        seen: dict[str, tuple[int, int, int]],
        key: str,
        decision: Decision,
        asked: int,
        *,
        exhausted: bool,
    ) -> None:
        """Remember a key refused, or left with nothing, so that `blocked` and `refused`
        answer without I/O. Its TAT is reckoned twice: from when the check was asked, before
        Redis read its clock (never later than Redis's own TAT: a refusal made on it is one
        Redis would make too), and from when the answer came, after (never earlier: the
        Retry-After and `t` told from it are never too soon)."""
        if decision.allowed and not exhausted:
            seen.pop(key, None)
            return
        if key not in seen and len(seen) >= REMEMBERED_KEYS:
            now = now_us()
            for old in [k for k, (tat, _, until) in seen.items() if min(tat, until) <= now]:
                del seen[old]
            if len(seen) >= REMEMBERED_KEYS:
                for old in list(seen)[: len(seen) // 2]:
                    del seen[old]
        seen[key] = (asked + decision.reset_us, now_us() + decision.reset_us, asked + REMEMBER_US)

    async def run(self, command: bytes) -> Any:
        """The script's reply to a packed `command` (sent with the others of this turn of the
        event loop), or None when Redis is down or slow."""
        if self._closed or time.monotonic() < self._down_until:
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_all())
        # A caller cancelled here cancels only its own future: the batch goes on.
        return await future

    async def _send_all(self) -> None:
        """Send the pending checks, one batch at a time, until none is left."""
        try:
            while self._pending:
                # Under load, at most one batch per BATCH_INTERVAL: the checks that arrive
                # meanwhile share its write (see BATCH_INTERVAL).
                wait = self._sent_at + BATCH_INTERVAL - time.monotonic()
                if wait > 0 and self.busy():
                    await asyncio.sleep(wait)
                if self._closed or time.monotonic() < self._down_until:
                    self._answer_pending(None)
                    break
                batch, self._pending = self._pending, []
                self._sent_at = time.monotonic()
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        replies: list[Any] = [None] * len(live)
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._connect()
                replies = await self._round_trip(connection, [c for c, _ in live])
                self._answering = True
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if again:
                    # Redis restarted, or SCRIPT FLUSH: load it, send those once more.
                    await self._load(connection)
                    retried = await self._round_trip(connection, [live[i][0] for i in again])
                    for i, reply in zip(again, retried, strict=True):
                        replies[i] = reply
            for i, reply in enumerate(replies):
                if isinstance(reply, Exception):
                    self._failed(reply)
                    replies[i] = None
        except Exception as exc:  # anything at all: fail open
            replies = [None] * len(live)
            self._failed(exc)
            await self._drop_connection()
        finally:
            # Cancelled (closing) midway, a NOSCRIPT may still be here: None for it too.
            for (_, future), reply in zip(live, replies, strict=True):
                if not future.done():
                    future.set_result(None if isinstance(reply, BaseException) else reply)

    async def _connect(self) -> AbstractConnection:
        """The store's one connection, fit to send on (it reconnects when sent on)."""
        connection = self._connection
        if connection is None:
            pool: ConnectionPoolInterface = self.client.connection_pool  # its typed face
            connection = await pool.get_connection()
            self._connection = connection
        elif connection.is_connected and time.monotonic() - self._used_at > IDLE_CHECK:
            # Closed by Redis while idle (its `timeout`, a restart) or holding stray bytes:
            # start afresh rather than fail a batch on it (what the pool does on each get).
            # Only after a pause: the check costs a cancelled read, and a connection in
            # steady use would have shown a close in its last batch.
            try:
                stale = await connection.can_read()
            except RedisConnectionError:
                stale = True
            if stale:
                await connection.disconnect()
        return connection

    async def _round_trip(self, connection: AbstractConnection, commands: list[bytes]) -> list[Any]:
        """Send `commands` in one write; their replies in order (an error reply as its
        exception)."""
        self._used_at = time.monotonic()
        await connection.send_packed_command(b"".join(commands), False)
        replies: list[Any] = []
        for _ in commands:
            try:
                # The batch's own timeout bounds the reads (none per read).
                replies.append(await connection.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies

    async def _load(self, connection: AbstractConnection) -> None:
        await connection.send_command("SCRIPT", "LOAD", SCRIPT, check_health=False)
        await connection.read_response(timeout=math.inf)

    async def _drop_connection(self) -> None:
        """Close a connection left in an unknown state (it reconnects on its next use)."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken socket
                await connection.disconnect(nowait=True)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = describe(exc, self.timeout)
        self._down_until = time.monotonic() + RETRY_INTERVAL
        self._answering = False

    def _answer_pending(self, reply: None) -> None:
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_result(reply)
