"""Webhooks: signed JSON notifications to merchants and service providers, at least once.

Two steps, each in its own bounded batch, so nothing is done inline with a payment:

1. ``do_enqueue_deliveries`` reads the outbox from the ``webhooks`` cursor and creates one
   delivery per (event, endpoint): the merchant's URL, and its service provider's URL if set.
   Creating the deliveries and advancing the cursor share one transaction, so an event is never
   skipped and never enqueued twice (a unique key on (event, party) backs that up).
2. ``deliver_due`` sends the deliveries that are due. A 2xx answer marks one delivered; anything
   else schedules a retry with exponential backoff (``BACKOFF_BASE_S`` doubling up to
   ``BACKOFF_MAX_S``) until ``ATTEMPTS_MAX``, after which it is ``failed`` and shown to operators.

Each request carries the event's stable id in the body and in ``Lianjie-Event-Id`` so receivers
drop duplicates, and a signature header in Stripe's shape:
``Lianjie-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson
from sqlalchemy import Connection, Engine, select

from lianjie import events
from lianjie.ids import new_id
from lianjie.payments.parties import get_party
from lianjie.payments.schema import webhook_deliveries as wd

CONSUMER = "webhooks"
NOTIFIED_TYPES = ("payment.succeeded", "refund.succeeded", "order.expired", "order.closed")
ENQUEUE_BATCH_MAX = 500
DELIVER_BATCH_MAX = 100
ATTEMPTS_MAX = 12
BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 3600
TIMEOUT_S = 5.0
SENDS_CONCURRENT_MAX = 16
SIGNATURE_TOLERANCE_S = 300


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    party_id: str
    url: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now_s: int) -> bool:
    """What a receiver does: check the HMAC and that the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp) > SIGNATURE_TOLERANCE_S:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected, header)


def _recipients(conn: Connection, merchant_id: str) -> list[tuple[str, str]]:
    merchant = get_party(conn, merchant_id)
    out: list[tuple[str, str]] = []
    if merchant is None:
        return out
    if merchant.webhook_url:
        out.append((merchant.id, merchant.webhook_url))
    if merchant.parent_id:
        sp = get_party(conn, merchant.parent_id)
        if sp is not None and sp.webhook_url:
            out.append((sp.id, sp.webhook_url))
    return out


def do_enqueue_deliveries(conn: Connection, now: datetime, limit: int = ENQUEUE_BATCH_MAX
                          ) -> int:
    """Turn new outbox events into pending deliveries; returns how many were created."""
    after = events.cursor(conn, CONSUMER)
    batch = events.read_after(conn, after, limit)
    created = 0
    # A batch holds many events of few merchants; this job runs on the committer, where every
    # query delays the requests waiting behind it, so each merchant's recipients are read once.
    recipients: dict[str, list[tuple[str, str]]] = {}
    for event in batch:
        if event.type not in NOTIFIED_TYPES:
            continue
        body = orjson.dumps({"id": event.id, "object": "event", "type": event.type,
                             "created_at": event.created_at.isoformat(),
                             "data": event.payload}).decode()
        if event.partition_key not in recipients:
            recipients[event.partition_key] = _recipients(conn, event.partition_key)
        for party_id, url in recipients[event.partition_key]:
            conn.execute(wd.insert().values(
                id=new_id("whd"), event_id=event.id, event_type=event.type, party_id=party_id,
                url=url, payload=body, status="pending", attempts=0, next_attempt_at=now,
                created_at=now))
            created += 1
    if batch:
        events.advance(conn, CONSUMER, batch[-1].seq)
    return created


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


def _delivery(row: object) -> Delivery:
    m = row._mapping  # type: ignore[attr-defined]
    return Delivery(**{f: m[f] for f in Delivery.__dataclass_fields__})


def due_deliveries(conn: Connection, now: datetime, limit: int = DELIVER_BATCH_MAX
                   ) -> list[Delivery]:
    rows = conn.execute(select(wd).where(wd.c.status == "pending", wd.c.next_attempt_at <= now)
                        .order_by(wd.c.next_attempt_at).limit(limit))
    return [_delivery(r) for r in rows]


def deliveries_for_event(conn: Connection, event_id: str) -> list[Delivery]:
    rows = conn.execute(select(wd).where(wd.c.event_id == event_id).order_by(wd.c.created_at))
    return [_delivery(r) for r in rows]


def deliveries_of(conn: Connection, party_id: str, limit: int = 50) -> list[Delivery]:
    rows = conn.execute(select(wd).where(wd.c.party_id == party_id)
                        .order_by(wd.c.created_at.desc()).limit(limit))
    return [_delivery(r) for r in rows]


def send(client: httpx.Client, delivery: Delivery, secret: str, now_s: int) -> str | None:
    """POST one delivery; None when acknowledged (2xx), else the error to record."""
    body = delivery.payload.encode()
    headers = {"Content-Type": "application/json", "Lianjie-Event-Id": delivery.event_id,
               "Lianjie-Signature": sign(secret, now_s, body)}
    try:
        response = client.post(delivery.url, content=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def do_record_attempt(conn: Connection, now: datetime, delivery_id: str, error: str | None
                      ) -> None:
    row = conn.execute(select(wd.c.attempts, wd.c.status).where(wd.c.id == delivery_id)).first()
    assert row is not None
    if row.status != "pending":
        return
    attempts = row.attempts + 1
    if error is None:
        values: dict[str, object] = {"status": "delivered", "attempts": attempts,
                                     "delivered_at": now, "last_error": None}
    elif attempts >= ATTEMPTS_MAX:
        values = {"status": "failed", "attempts": attempts, "last_error": error}
    else:
        values = {"attempts": attempts, "last_error": error,
                  "next_attempt_at": now + backoff(attempts)}
    conn.execute(wd.update().where(wd.c.id == delivery_id).values(**values))


def deliver_due(engine: Engine, run: Callable[[Callable[[Connection], object]], object],
                client: httpx.Client, now: datetime, limit: int = DELIVER_BATCH_MAX) -> int:
    """Send what is due and record each outcome through ``run`` (the committer's).

    Endpoints are served ``SENDS_CONCURRENT_MAX`` at a time, each endpoint's deliveries in
    event order, so one slow or dead endpoint delays only itself. Returns how many were sent.
    """
    with engine.connect() as conn:
        due = due_deliveries(conn, now, limit)
        secrets: dict[str, str] = {}
        for d in due:
            party = get_party(conn, d.party_id)
            secrets[d.id] = party.webhook_secret if party and party.webhook_secret else ""
    if not due:
        return 0
    now_s = int(now.timestamp())
    by_url: dict[str, list[Delivery]] = {}
    for d in due:
        by_url.setdefault(d.url, []).append(d)

    def send_in_order(batch: list[Delivery]) -> list[str | None]:
        return [send(client, d, secrets[d.id], now_s) for d in batch]

    with ThreadPoolExecutor(max_workers=min(SENDS_CONCURRENT_MAX, len(by_url))) as pool:
        outcomes = list(pool.map(send_in_order, by_url.values()))
    for batch, errors in zip(by_url.values(), outcomes, strict=True):
        for d, error in zip(batch, errors, strict=True):
            run(_recorder(now, d.id, error))
    return len(due)


def _recorder(now: datetime, delivery_id: str, error: str | None
              ) -> Callable[[Connection], None]:
    def unit(conn: Connection) -> None:
        do_record_attempt(conn, now, delivery_id, error)
    return unit
