"""The three hottest routes served below FastAPI: create an order, pay it, grab a red packet.

A payment is two requests and a red packet is grabbed by thousands, and for each FastAPI spent
more CPU than the unit of work it queued: the middleware stack, matching the path against the
routes in turn, solving dependencies, validating the body (benchmarks/RESULTS.md, "Payments
over HTTP"). ``LianjieApp`` answers these three directly from the ASGI scope:

    POST /v1/orders                     routes_payments.create_once
    POST /v1/orders/{order_id}/pay      routes_payments.pay_once
    POST /v1/red_packets/{id}/grab      routes_marketing.grab_once

It runs the very unit of work, idempotency and response code the FastAPI routes run, and the
FastAPI routes stay registered: they are what the OpenAPI document describes, and they serve
every request the fast path does not take. The fast path takes a request only when it is
plainly well-formed: a JSON body sent as ``application/json`` that the route's own pydantic
model accepts, a known API key of the right role, an Idempotency-Key. Anything else (a
malformed body, a missing key, another media type...) is handed to FastAPI untouched, body
and all, so every refusal made before the unit of work has exactly the shape it always had,
because the same code makes it. What the unit of work raises is answered by
``errors.response_for``, the function FastAPI's exception handlers call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.datastructures import URL

from lianjie.api import errors, idempotency
from lianjie.api.access import CLIENT_IP_HEADER, DEVICE_ID_HEADER, ClientContext
from lianjie.api.keys import Principal, Role
from lianjie.api.runtime import Runtime, require_role
from lianjie.errors import DomainError, ErrorCode

log = logging.getLogger("lianjie.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_CLIENT_HEADERS = (CLIENT_IP_HEADER.lower().encode(), DEVICE_ID_HEADER.lower().encode())
# A path that ``request.url.path`` (Starlette's URL, through ``urlsplit``) gives back as it is:
# building that URL per request was 4% of a grab's CPU.
_PLAIN_PATH = re.compile(r"/(?!/)[^?#\\\x00-\x20\x7f]*")
BODY_BYTES_MAX = 64 * 1024  # larger bodies go to FastAPI; none of these routes needs one


class _Decline(Exception):
    """This request is for FastAPI: something about it is not plainly well-formed."""


class _Request:
    """What the fast path reads from one request."""

    __slots__ = ("authorization", "body", "content_type", "idempotency_key", "scope",
                 "speaks_for_client")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.scope = scope
        self.body = body
        self.authorization: str | None = None
        self.idempotency_key: str | None = None
        self.content_type: str | None = None
        self.speaks_for_client = False  # sends Lianjie-Client-Ip or Lianjie-Device-Id
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"authorization" and self.authorization is None:
                self.authorization = value.decode("latin-1")
            elif name == b"idempotency-key" and self.idempotency_key is None:
                self.idempotency_key = value.decode("latin-1")
            elif name == b"content-type" and self.content_type is None:
                self.content_type = value.decode("latin-1")
            elif name in _CLIENT_HEADERS:
                self.speaks_for_client = True

    def json(self, model: Any) -> Any:
        """The body validated by ``model``, as FastAPI would validate it."""
        media = (self.content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/json" or not self.body:
            raise _Decline
        try:
            return model.model_validate(orjson.loads(self.body))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise _Decline from exc

    async def caller(self, rt: Runtime, *roles: Role) -> Principal:
        try:
            principal = await rt.principal_of(self.authorization)
            if roles:
                require_role(principal, *roles)
        except DomainError as exc:
            raise _Decline from exc
        return principal

    def idempotency(self) -> tuple[str, bytes]:
        """The Idempotency-Key and the request's fingerprint, as ``Runtime.mutate`` has them."""
        try:
            key = idempotency.check_key(self.idempotency_key)
        except DomainError as exc:
            raise _Decline from exc
        path: str = self.scope["path"]
        if not _PLAIN_PATH.fullmatch(path):  # what request.url.path makes of it
            path = URL(scope=self.scope).path
        return key, idempotency.fingerprint("POST", path, self.body)

    def client(self, device_id: str | None) -> ClientContext:
        """The end client as ``access.client_context`` sees a consumer's own request; a request
        naming another client (which ``client_context`` checks) goes to FastAPI."""
        if self.speaks_for_client:
            raise _Decline
        client = self.scope.get("client")
        return ClientContext(client[0] if client else None, device_id)


Outcome = tuple[idempotency.Stored, bool]  # the response, and whether it is a replay
Handler = Callable[[Runtime, _Request, str], Awaitable[Outcome]]


async def _create_order(rt: Runtime, req: _Request, _arg: str) -> Outcome:
    from lianjie.api.routes_payments import OrderIn, create_once

    body = req.json(OrderIn)
    p = await req.caller(rt)
    key, fp = req.idempotency()
    return await create_once(rt, p, body, key, fp)


async def _pay_order(rt: Runtime, req: _Request, order_id: str) -> Outcome:
    from lianjie.api.routes_payments import PayIn, pay_once

    body = req.json(PayIn)
    p = await req.caller(rt, Role.CONSUMER)
    key, fp = req.idempotency()
    return await pay_once(rt, p, order_id, body, req.client(body.device_id), key, fp)


async def _grab(rt: Runtime, req: _Request, packet_id: str) -> Outcome:
    from lianjie.api.routes_marketing import GrabIn, grab_once

    body = req.json(GrabIn)
    p = await req.caller(rt, Role.CONSUMER)
    key, fp = req.idempotency()
    return await grab_once(rt, p, p.party_id, packet_id, body, key, fp)


# The paths as the FastAPI routes match them (a path parameter is ``[^/]+``);
# tests/test_api_fastpath.py checks that FastAPI would send each to the same route.
_ROUTES: tuple[tuple[re.Pattern[str], Handler], ...] = (
    (re.compile(r"/v1/orders/([^/]+)/pay"), _pay_order),
    (re.compile(r"/v1/red_packets/([^/]+)/grab"), _grab),
)


def _match(scope: Scope) -> tuple[Handler, str] | None:
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if path == "/v1/orders":
        return _create_order, ""
    if not path.startswith(("/v1/orders/", "/v1/red_packets/")):
        return None
    for pattern, handler in _ROUTES:
        found = pattern.fullmatch(path)
        if found:
            return handler, found.group(1)
    return None


class LianjieApp(FastAPI):
    """The FastAPI app, with the hot routes answered before FastAPI's own machinery."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = _match(scope)
        if matched is None:
            if scope["type"] == "http" and _nul_in_url(scope):
                await errors.response_for(DomainError(
                    ErrorCode.INVALID_REQUEST, "the URL must not contain a NUL character"))(
                    scope, receive, send)
                return
            await super().__call__(scope, receive, send)
            return
        received, body = await _read_body(receive)
        if body is None:  # too large, or the client went away: FastAPI deals with it
            await super().__call__(scope, _Replay(received, receive), send)
            return
        handler, arg = matched
        rt: Runtime = self.state.runtime
        try:
            stored, replayed = await handler(rt, _Request(scope, body), arg)
        except _Decline:
            await super().__call__(scope, _Replay(received, receive), send)
            return
        except Exception as exc:  # answered as FastAPI's exception handlers answer it
            response = errors.response_for(exc)
            await response(scope, receive, send)
            if response.status_code == 500:
                raise  # as Starlette's ServerErrorMiddleware does, so the server logs it
            return
        headers = [(b"content-type", b"application/json")]
        if replayed:
            headers.append((b"idempotent-replayed", b"true"))
        data = stored.body.encode()
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": stored.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": data})


def _nul_in_url(scope: Scope) -> bool:
    """A NUL character in the path or the query string (percent-encoded: a raw one cannot
    cross HTTP/1.1), refused as request bodies' are (``routes_parties.Body``): PostgreSQL
    cannot hold one in text, so a path or query parameter carrying it would fail the query."""
    return "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages received and the whole body, or None for the body when it is larger than
    ``BODY_BYTES_MAX`` or the client disconnected."""
    received: list[Message] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, None
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return received, b"".join(m.get("body", b"") for m in received)
        if size > BODY_BYTES_MAX:
            return received, None


class _Replay:
    """A ``receive`` that hands FastAPI the messages the fast path already read, then the
    rest of the stream."""

    def __init__(self, received: list[Message], receive: Receive) -> None:
        self._received = list(received)
        self._receive = receive

    async def __call__(self) -> Message:
        if self._received:
            return self._received.pop(0)
        return await self._receive()
