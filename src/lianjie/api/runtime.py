"""What every route needs: the database, the committer, the clock, settings, and the three
request-level duties (who is calling, run a read, run an idempotent write).

Writes go through the group committer: a POST's unit of work (idempotency check, the domain
action, storing the response) runs in one savepoint of a shared durable transaction, and the
response is sent only after that transaction commits. Reads run on pooled connections in worker
threads and never wait for the writer (SQLite WAL readers see the last commit).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import Request
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from lianjie.api import idempotency, keys
from lianjie.api.keys import KeyCache, Principal, Role
from lianjie.batcher import Batcher
from lianjie.clock import Clock
from lianjie.committer import Committer
from lianjie.errors import DomainError, ErrorCode
from lianjie.payments import PaymentsConfig

T = TypeVar("T")
Action = Callable[[Connection], tuple[int, dict[str, Any]]]


@dataclass
class Runtime:
    engine: Engine
    committer: Committer
    clock: Clock
    cfg: PaymentsConfig
    key_cache: KeyCache
    key_lookups: KeyLookups = field(default_factory=lambda: KeyLookups())

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._read, fn)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    async def write(self, unit: Callable[[Connection], T]) -> T:
        return await self.committer.submit_async(unit)

    async def principal(self, request: Request) -> Principal:
        return await self.principal_of(request.headers.get("authorization"))

    async def principal_of(self, header: str | None) -> Principal:
        """Who sends the ``Authorization`` header ``header``."""
        if not header:
            raise DomainError(ErrorCode.MISSING_API_KEY,
                              "send your API key as 'Authorization: Bearer <key>'")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or len(secret) > 200:
            raise DomainError(ErrorCode.INVALID_API_KEY, "malformed Authorization header")
        digest = keys.digest(secret)
        found = self.key_cache.get(digest)
        if found is None:
            found = await self.key_lookups.principal(self, digest)
            if found is None:
                raise DomainError(ErrorCode.INVALID_API_KEY, "unknown or revoked API key")
        return found

    async def mutate(self, request: Request, principal: Principal, action: Action) -> Response:
        """Run ``action`` once per Idempotency-Key; replay its stored response afterwards."""
        key, fp = await idempotency_of(request)
        return stored_response(*await self.mutate_once(principal, key, fp, action))

    async def mutate_once(self, principal: Principal, key: str, fp: bytes, action: Action
                          ) -> tuple[idempotency.Stored, bool]:
        """``mutate`` below the request: the response to send, and whether it is a replay.

        Secrets in a response (a new API key, a webhook signing secret) are not stored: a
        replay shows them as ``[shown once]``.
        """
        def unit(conn: Connection) -> tuple[idempotency.Stored, bool]:
            stored = idempotency.lookup(conn, principal.key_id, key, fp)
            if stored is not None:
                return stored, True
            status, payload = action(conn)
            text, kept = _texts(payload)
            idempotency.store(conn, self.clock.now(), principal.key_id, key, fp, status, kept)
            return idempotency.Stored(status, text), False

        return await self.write(unit)


def _texts(payload: dict[str, Any]) -> tuple[str, str]:
    """The response's JSON, and the JSON stored for replays (secrets redacted)."""
    text = orjson.dumps(payload).decode()
    return text, orjson.dumps(redact(payload)).decode() if SECRET_FIELDS & payload.keys() \
        else text


IdemTag = tuple[str, str, bytes]  # API key id, Idempotency-Key, request fingerprint


class BatchedKeys:
    """Idempotency-Keys for requests batched into one unit (a ``batcher.Around``): what
    ``Runtime.mutate`` does for one request, done for a batch of them in the same unit. Tags
    are ``IdemTag``; ``view`` turns a request's result into its response (status, payload).
    A request answers ``(Stored, replayed)``, or its refusal."""

    def __init__(self, view: Callable[[Any], tuple[int, dict[str, Any]]]) -> None:
        self.view = view

    def same(self, tag: IdemTag) -> tuple[str, str]:
        return tag[0], tag[1]

    def before(self, conn: Connection, tags: Sequence[IdemTag]) -> list[Any]:
        return [None if found is None else found if isinstance(found, DomainError)
                else (found, True) for found in idempotency.lookup_many(conn, tags)]

    def after(self, conn: Connection, now: datetime, tags: Sequence[IdemTag],
              outcomes: Sequence[Any]) -> list[Any]:
        answers: list[Any] = []
        rows: list[tuple[str, str, bytes, int, str]] = []
        for (key_id, key, fp), outcome in zip(tags, outcomes, strict=True):
            if isinstance(outcome, DomainError):  # refusals are not stored: nothing changed
                answers.append(outcome)
                continue
            status, payload = self.view(outcome)
            text, kept = _texts(payload)
            rows.append((key_id, key, fp, status, kept))
            answers.append((idempotency.Stored(status, text), False))
        idempotency.store_many(conn, now, rows)
        return answers


_BATCHERS: weakref.WeakKeyDictionary[Committer, dict[str, Batcher[Any, Any]]] = \
    weakref.WeakKeyDictionary()


def batcher_of(rt: Runtime, name: str, make: Callable[[], Batcher[Any, Any]]
               ) -> Batcher[Any, Any]:
    """The runtime's batcher called ``name``, made by ``make`` on first use. Made on the event
    loop's thread, so no two are made for one name."""
    mine = _BATCHERS.setdefault(rt.committer, {})
    found = mine.get(name)
    if found is None:
        found = mine[name] = make()
    return found


KEY_LOOKUPS_PER_READ_MAX = 1000


class KeyLookups:
    """API keys missing from the cache, looked up together.

    Every consumer's first request misses the key cache, and a hot red packet brings thousands
    of them at once: one read per miss cost a thread hop and a statement each, more CPU than the
    grab itself (benchmarks/RESULTS.md, "HTTP grabs"). Misses that arrive while a read is
    running wait for the next one, which looks them all up in one statement (at most
    ``KEY_LOOKUPS_PER_READ_MAX``). Each event loop has its own queue and reader task (a server
    has one loop; tests may serve one runtime from two).
    """

    def __init__(self) -> None:
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _KeyQueue] = \
            weakref.WeakKeyDictionary()
        self.reads = 0  # database reads made, for tests and benchmarks

    async def principal(self, rt: Runtime, digest: bytes) -> Principal | None:
        """The live key whose digest is ``digest``, read from the database, then cached."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _KeyQueue()
        waiter: asyncio.Future[Principal | None] = loop.create_future()
        queue.waiting.setdefault(digest, []).append(waiter)
        if queue.reader is None:
            queue.reader = loop.create_task(self._read_all(rt, queue))
        return await waiter

    async def _read_all(self, rt: Runtime, queue: _KeyQueue) -> None:
        batch: _Waiters = {}
        try:
            while queue.waiting:
                digests = list(itertools.islice(queue.waiting, KEY_LOOKUPS_PER_READ_MAX))
                batch = {d: queue.waiting.pop(d) for d in digests}
                self.reads += 1
                try:
                    found, epoch = await rt.read(partial(keys.lookup_at_epoch, digests=digests))
                except SQLAlchemyError as exc:  # each request fails as its own read would
                    _settle(batch, exc)
                    continue
                rt.key_cache.observe(epoch)
                for d, principal in found.items():
                    rt.key_cache.put(d, principal, epoch)
                _settle(batch, found)
        except BaseException as exc:  # a bug, or cancelled: no request waits forever
            waiting, queue.waiting = queue.waiting, {}
            _settle(batch, exc)
            _settle(waiting, exc)
            raise
        finally:
            queue.reader = None


_Waiters = dict[bytes, list[asyncio.Future[Principal | None]]]


class _KeyQueue:
    """One event loop's misses waiting for a read, and the task reading them."""

    __slots__ = ("reader", "waiting")

    def __init__(self) -> None:
        self.waiting: _Waiters = {}
        self.reader: asyncio.Task[None] | None = None


def _settle(waiters: _Waiters, outcome: dict[bytes, Principal] | BaseException) -> None:
    for d, futures in waiters.items():
        for f in futures:
            if f.done():
                continue
            if isinstance(outcome, Exception):
                f.set_exception(outcome)
            elif isinstance(outcome, BaseException):
                f.cancel()
            else:
                f.set_result(outcome.get(d))


async def idempotency_of(request: Request) -> tuple[str, bytes]:
    """A POST's Idempotency-Key, checked, and the request's fingerprint: what ``mutate`` and
    the batched routes store a response under."""
    key = idempotency.check_key(request.headers.get("idempotency-key"))
    return key, idempotency.fingerprint(request.method, request.url.path, await request.body())


def stored_response(stored: idempotency.Stored, replayed: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(stored.body, status_code=stored.status_code,
                    media_type="application/json", headers=headers)


SECRET_FIELDS = frozenset({"api_key", "secret", "webhook_secret"})
REDACTED = "[shown once]"


def redact(payload: dict[str, Any]) -> dict[str, Any]:
    """The response as stored for replays: secrets are shown once and never stored."""
    return {k: (REDACTED if k in SECRET_FIELDS else v) for k, v in payload.items()}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def current_runtime(request: Request) -> Runtime:
    """``runtime`` as a route dependency. It is async because FastAPI runs a plain ``def``
    dependency in a worker thread: a thread hop per request for an attribute read."""
    return runtime(request)


def json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def require_role(principal: Principal, *roles: Role) -> None:
    keys.require_role(principal, *roles)
