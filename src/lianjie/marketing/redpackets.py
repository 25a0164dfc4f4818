"""Red packets: sending, grabbing, and returning what nobody grabbed.

Money path. Sending moves the total from the sender's wallet (or a campaign's budget) into the
packet's own ledger account (purpose ``red_packet``, flagged so it can never go below zero):

    sender wallet / campaign budget -> red packet escrow     total
    red packet escrow               -> taker's wallet        each share, one entry per grab
    red packet escrow               -> sender / budget       what is left, when it expires

Why it is never overspent: a grab runs in the same transaction as the packet row it advances
(``shares_taken``, ``amount_taken``; locked ``FOR UPDATE`` on PostgreSQL, and SQLite has one
writer), the share is computed from what is left (see ``split``), the grab row's primary key
(packet, consumer) refuses a second grab, the ledger entry's key ``grab:<packet>:<consumer>``
is idempotent, and even if all of that were wrong the escrow account's limit flag refuses to
pay out more than was put in.

Grabs are processed in batches (``do_grab_many``): one packet row read and written, one ledger
call and one insert per batch however many grabs it holds, which is what lets one hot packet
take thousands of grabs per second through the group committer (see ``batcher``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select

from lianjie import events, ledger
from lianjie.clock import to_us
from lianjie.db import rows_in
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id, secret_token
from lianjie.ledger import AccountFlags, AccountStatus, Entry, Leg, Purpose
from lianjie.ledger import schema as ls
from lianjie.marketing import risk, split
from lianjie.marketing.groups import require_group
from lianjie.marketing.schema import campaigns, grabs, group_members, red_packets
from lianjie.money import check_amount, currency
from lianjie.payments import PartyKind, account_id, require_party
from lianjie.risk import RiskDeclined

SHARES_MAX = 100_000
EXPIRES_IN_S_DEFAULT = 86_400
EXPIRES_IN_S_MIN = 60
EXPIRES_IN_S_MAX = 7 * 86_400
GRABS_PER_BATCH_MAX = 4096
EXPIRE_BATCH_MAX = 1000
PAGE_SIZE_MAX = 100
E = ErrorCode


@dataclass(frozen=True, slots=True)
class RedPacket:
    id: str
    sender_id: str
    group_id: str | None
    campaign_id: str | None
    merchant_id: str | None
    per_person_max: int | None
    split: str
    amount: int
    currency: str
    shares: int
    shares_taken: int
    amount_taken: int
    seed: str
    status: str
    escrow_account_id: int
    send_entry_id: int
    return_entry_id: int | None
    amount_returned: int
    expires_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Grab:
    packet_id: str
    consumer_id: str
    seq: int
    amount: int
    currency: str
    entry_id: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GrabRequest:
    packet_id: str
    consumer_id: str
    device_id: str | None = None


def _packet(row: Row[Any]) -> RedPacket:
    m = row._mapping
    return RedPacket(**{f: m[f] for f in RedPacket.__dataclass_fields__})


_BY_ID = select(red_packets).where(red_packets.c.id == bindparam("b_id"))
_BY_ID_FOR_UPDATE = _BY_ID.with_for_update()


def get_packet(conn: Connection, packet_id: str, *, for_update: bool = False
               ) -> RedPacket | None:
    lock = for_update and conn.dialect.name == "postgresql"
    row = conn.execute(_BY_ID_FOR_UPDATE if lock else _BY_ID, {"b_id": packet_id}).first()
    return None if row is None else _packet(row)


def require_packet(conn: Connection, packet_id: str, *, for_update: bool = False) -> RedPacket:
    packet = get_packet(conn, packet_id, for_update=for_update) \
        if isinstance(packet_id, str) else None
    if packet is None:
        raise DomainError(E.RED_PACKET_NOT_FOUND, f"no red packet {packet_id!r}", "id")
    return packet


def grabs_of(conn: Connection, packet_id: str, *, after_seq: int = -1,
             limit: int = PAGE_SIZE_MAX) -> list[Grab]:
    assert 0 < limit <= PAGE_SIZE_MAX + 1
    packet = require_packet(conn, packet_id)
    rows = conn.execute(select(grabs).where(grabs.c.packet_id == packet_id,
                                            grabs.c.seq > after_seq)
                        .order_by(grabs.c.seq).limit(limit))
    return [Grab(r.packet_id, r.consumer_id, r.seq, r.amount, packet.currency, r.entry_id,
                 r.created_at) for r in rows]


def _check_shape(amount: int, shares: int, split_kind: str, expires_in_s: int | None
                 ) -> tuple[int, int]:
    amount = check_amount(amount)
    if split_kind not in split.SPLITS:
        raise DomainError(E.INVALID_REQUEST, "split must be 'equal' or 'lucky'", "split")
    if isinstance(shares, bool) or not isinstance(shares, int) or \
            not 1 <= shares <= SHARES_MAX:
        raise DomainError(E.INVALID_SHARES, f"shares must be from 1 to {SHARES_MAX}", "shares")
    if amount < shares:
        raise DomainError(E.INVALID_SHARES, "every share must be at least 0.01: the amount "
                          "must be at least the number of shares", "shares")
    ttl = EXPIRES_IN_S_DEFAULT if expires_in_s is None else expires_in_s
    if isinstance(ttl, bool) or not isinstance(ttl, int) or \
            not EXPIRES_IN_S_MIN <= ttl <= EXPIRES_IN_S_MAX:
        raise DomainError(E.INVALID_EXPIRY, f"expires_in_s must be from {EXPIRES_IN_S_MIN} to "
                          f"{EXPIRES_IN_S_MAX}", "expires_in_s")
    return amount, ttl


def create_packet(conn: Connection, now: datetime, *, sender_id: str, source_account_id: int,
                  amount: int, currency_code: str, shares: int, split_kind: str,
                  expires_in_s: int | None, group_id: str | None = None,
                  campaign_id: str | None = None, merchant_id: str | None = None,
                  per_person_max: int | None = None) -> RedPacket:
    """Open the packet's escrow account and fund it from ``source_account_id``: one entry."""
    amount, ttl = _check_shape(amount, shares, split_kind, expires_in_s)
    currency(currency_code)
    packet_id = new_id("rp")
    escrow = ledger.open_account(conn, now, packet_id, Purpose.RED_PACKET, currency_code,
                                 AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    result = ledger.post(conn, now, Entry(key=f"red_packet:{packet_id}", legs=(
        Leg(source_account_id, escrow.id, amount),), code="red_packet_send", memo=packet_id))
    assert result.entry_id is not None
    values: dict[str, Any] = dict(
        id=packet_id, sender_id=sender_id, group_id=group_id, campaign_id=campaign_id,
        merchant_id=merchant_id, per_person_max=per_person_max, split=split_kind,
        amount=amount, currency=currency_code, shares=shares, shares_taken=0, amount_taken=0,
        seed=secret_token(24), status="open", escrow_account_id=escrow.id,
        send_entry_id=result.entry_id, return_entry_id=None, amount_returned=0,
        expires_at=now + timedelta(seconds=ttl), created_at=now)
    conn.execute(red_packets.insert(), values)
    packet = RedPacket(**values)
    events.emit(conn, now, "red_packet.sent", sender_id, packet_payload(packet))
    return packet


def do_send(conn: Connection, now: datetime, sender_id: str, group_id: str, *, amount: int,
            currency_code: str, shares: int, split_kind: str,
            expires_in_s: int | None = None) -> RedPacket:
    """A consumer sends a red packet to a group it belongs to, from its wallet."""
    sender = require_party(conn, sender_id, PartyKind.CONSUMER, "sender_id")
    if not sender.active:
        raise DomainError(E.ACCOUNT_FROZEN, "the sender's wallet is frozen", "sender_id")
    group = require_group(conn, group_id)
    if sender_id not in group.members:
        raise DomainError(E.GROUP_NOT_FOUND, f"no group {group_id!r}", "group_id")
    currency(currency_code)
    wallet = account_id(conn, sender_id, Purpose.WALLET, currency_code)
    return create_packet(conn, now, sender_id=sender_id, source_account_id=wallet,
                         amount=amount, currency_code=currency_code, shares=shares,
                         split_kind=split_kind, expires_in_s=expires_in_s, group_id=group_id)


# -- grabbing ------------------------------------------------------------------------------------

_UPDATE_TAKEN = red_packets.update().where(
    red_packets.c.id == bindparam("b_id"),
    red_packets.c.shares_taken == bindparam("b_shares_taken_before"))
_GRAB_COLUMNS = ("packet_id", "consumer_id", "seq", "amount", "campaign_id", "entry_id")


def _insert_grabs(conn: Connection, now_us: int, rows: list[dict[str, Any]]) -> None:
    """One driver-level ``executemany``: on a hot packet, building and converting thousands of
    rows through SQLAlchemy costs more than the database's own work (see benchmarks)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {grabs.name} ({', '.join(_GRAB_COLUMNS)}, created_at) "
           f"VALUES ({', '.join([mark] * (len(_GRAB_COLUMNS) + 1))})")
    conn.exec_driver_sql(sql, [(*(r[c] for c in _GRAB_COLUMNS), now_us) for r in rows])


def do_grab(conn: Connection, now: datetime, packet_id: str, consumer_id: str,
            device_id: str | None = None) -> Grab:
    """One consumer grabs one share; raises the refusal as a ``DomainError``."""
    (outcome,) = do_grab_many(conn, now, [GrabRequest(packet_id, consumer_id, device_id)])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def do_grab_many(conn: Connection, now: datetime, requests: Sequence[GrabRequest]
                 ) -> list[Grab | DomainError]:
    """Grab for many consumers at once: one outcome per request, in order.

    Requests for one packet are served in the order given; a refused request changes nothing.
    """
    assert 0 < len(requests) <= GRABS_PER_BATCH_MAX
    outcomes: list[Grab | DomainError | None] = [None] * len(requests)
    by_packet: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        by_packet.setdefault(req.packet_id, []).append(i)
    taken: dict[tuple[str, str], int] = {}  # (campaign, consumer): grabs in this batch
    for packet_id, indexes in by_packet.items():
        for i, outcome in zip(indexes, _grab_packet(conn, now, packet_id,
                                                    [requests[i] for i in indexes], taken),
                              strict=True):
            outcomes[i] = outcome
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


# Driver SQL for ``db.rows_in``: ``{in}`` is the list of consumers.
_ALREADY_SQL = f"SELECT consumer_id FROM {grabs.name} WHERE packet_id = ? AND consumer_id {{in}}"
_MEMBERS_SQL = (f"SELECT consumer_id FROM {group_members.name} WHERE group_id = ? "
                "AND consumer_id {in}")
_PER_PERSON_SQL = (f"SELECT consumer_id, count(*) FROM {grabs.name} WHERE campaign_id = ? "
                   "AND consumer_id {in} GROUP BY consumer_id")
_WALLETS_SQL = (f"SELECT owner_id, id, status FROM {ls.accounts.name} WHERE purpose = ? "
                "AND currency = ? AND owner_id {in}")


def _refusals(conn: Connection, packet: RedPacket, consumers: list[str],
              taken: dict[tuple[str, str], int]
              ) -> tuple[dict[str, DomainError], dict[str, int]]:
    """Who may not grab and why, and the wallet account of everyone who may: one read of each
    kind for the whole batch."""
    refused: dict[str, DomainError] = {}
    wanted = sorted(set(consumers))
    for (c,) in rows_in(conn, _ALREADY_SQL, (packet.id,), wanted):
        refused[c] = DomainError(E.ALREADY_GRABBED, "you already grabbed this red packet", "id")
    if packet.group_id is not None:
        members = {c for (c,) in rows_in(conn, _MEMBERS_SQL, (packet.group_id,), wanted)}
        for c in set(wanted) - members:
            refused.setdefault(c, DomainError(E.NOT_IN_GROUP, "only members of the group may "
                                              "grab this red packet", "id"))
    if packet.campaign_id is not None and packet.per_person_max is not None:
        _per_person(conn, packet, wanted, refused, taken)
    wallets = {owner: (account, status) for owner, account, status in rows_in(
        conn, _WALLETS_SQL, (Purpose.WALLET.value, packet.currency), wanted)}
    for c in wanted:
        found = wallets.get(c)
        if found is None:
            refused.setdefault(c, DomainError(E.PARTY_NOT_FOUND, f"no consumer {c!r}",
                                              "consumer_id"))
        elif found[1] != AccountStatus.OPEN.value:
            refused.setdefault(c, DomainError(E.ACCOUNT_FROZEN, "your wallet is frozen",
                                              "consumer_id"))
    return refused, {c: w[0] for c, w in wallets.items()}


_LOCK_CAMPAIGN = select(campaigns.c.id).where(campaigns.c.id == bindparam("b_id")
                                              ).with_for_update()


def _per_person(conn: Connection, packet: RedPacket, wanted: list[str],
                refused: dict[str, DomainError], taken: dict[tuple[str, str], int]) -> None:
    """Refuse consumers at the campaign's per-person limit. On PostgreSQL the campaign row is
    locked first, so grabs of one campaign's packets in concurrent transactions count in turn."""
    assert packet.per_person_max is not None and packet.campaign_id is not None
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CAMPAIGN, {"b_id": packet.campaign_id})
    counts: dict[str, int] = {c: n for c, n in rows_in(
        conn, _PER_PERSON_SQL, (packet.campaign_id,), wanted)}
    for c in wanted:
        n = counts.get(c, 0) + taken.get((packet.campaign_id, c), 0)
        if n >= packet.per_person_max:
            refused.setdefault(c, DomainError(
                E.PER_PERSON_LIMIT_REACHED,
                f"at most {packet.per_person_max} red packets of this campaign per person",
                "id"))


def _grab_packet(conn: Connection, now: datetime, packet_id: str, reqs: list[GrabRequest],
                 taken_in_batch: dict[tuple[str, str], int]) -> list[Grab | DomainError]:
    packet = get_packet(conn, packet_id, for_update=True)
    if packet is None:
        err = DomainError(E.RED_PACKET_NOT_FOUND, f"no red packet {packet_id!r}", "id")
        return [err] * len(reqs)
    if packet.status == "expired" or now >= packet.expires_at:
        err = DomainError(E.RED_PACKET_EXPIRED, "the red packet has expired", "id")
        return [err] * len(reqs)
    refused, wallets = _refusals(conn, packet, [r.consumer_id for r in reqs], taken_in_batch)
    screening = risk.Screening(conn, now) if risk.asks(conn) else None
    outcomes: list[Grab | DomainError] = []
    entries: list[Entry] = []
    rows: list[dict[str, Any]] = []
    seq, taken = packet.shares_taken, packet.amount_taken
    for req in reqs:
        c = req.consumer_id
        if c in refused:
            outcomes.append(refused[c])
            continue
        if seq >= packet.shares:
            outcomes.append(DomainError(E.RED_PACKET_EMPTY, "every share has been taken",
                                        "id"))
            continue
        amount = split.share(packet.split, packet.seed, packet.amount, packet.shares, seq,
                             taken)
        if screening is not None:
            try:
                screening.grab(c, packet.id, amount, packet.currency, req.device_id)
            except RiskDeclined as declined:  # this grab only: log the decision, go on
                declined.record(conn)
                outcomes.append(declined)
                refused[c] = declined
                continue
        entries.append(Entry(key=f"grab:{packet.id}:{c}", legs=(
            Leg(packet.escrow_account_id, wallets[c], amount),), code="red_packet_grab",
            memo=packet.id))
        rows.append({"packet_id": packet.id, "consumer_id": c, "seq": seq, "amount": amount,
                     "campaign_id": packet.campaign_id, "created_at": now})
        outcomes.append(Grab(packet.id, c, seq, amount, packet.currency, 0, now))
        if packet.campaign_id is not None:
            key = (packet.campaign_id, c)
            taken_in_batch[key] = taken_in_batch.get(key, 0) + 1
        # A second request of the same consumer in this batch is a second grab.
        refused[c] = DomainError(E.ALREADY_GRABBED, "you already grabbed this red packet", "id")
        seq += 1
        taken += amount
    if screening is not None:
        screening.finish()  # the batch's decisions are logged in this unit, blocks included
    if not entries:
        return outcomes
    _post_grabs(conn, now, packet, entries, rows, seq, taken)
    ids = iter(row["entry_id"] for row in rows)
    return [Grab(o.packet_id, o.consumer_id, o.seq, o.amount, o.currency, next(ids),
                 o.created_at) if isinstance(o, Grab) else o for o in outcomes]


def _post_grabs(conn: Connection, now: datetime, packet: RedPacket, entries: list[Entry],
                rows: list[dict[str, Any]], seq: int, taken: int) -> None:
    assert taken <= packet.amount and seq <= packet.shares
    assert seq < packet.shares or taken == packet.amount
    results = ledger.create_entries(conn, now, entries)
    for result, row in zip(results, rows, strict=True):
        # Wallets were checked open and the escrow holds exactly what is left: a refusal here
        # is our bug, and failing the whole unit moves nothing.
        assert result.ok and not result.replayed, (result, row)
        row["entry_id"] = result.entry_id
    _insert_grabs(conn, to_us(now), rows)
    updated = conn.execute(_UPDATE_TAKEN, {
        "b_id": packet.id, "b_shares_taken_before": packet.shares_taken, "shares_taken": seq,
        "amount_taken": taken, "status": "emptied" if seq == packet.shares else "open"})
    assert updated.rowcount == 1, "the packet row is locked by this transaction"
    events.emit(conn, now, "red_packet.grabbed", packet.sender_id, {
        "id": packet.id, "object": "red_packet_grabs", "campaign_id": packet.campaign_id,
        "grabs": [{"consumer_id": r["consumer_id"], "amount": r["amount"], "seq": r["seq"]}
                  for r in rows]})


# -- expiry --------------------------------------------------------------------------------------

def do_expire_packets(conn: Connection, now: datetime, limit: int = EXPIRE_BATCH_MAX) -> int:
    """Return what is left in expired packets to their sender (or campaign budget)."""
    assert 0 < limit <= 10_000
    ids = conn.execute(select(red_packets.c.id).where(
        red_packets.c.status.in_(("open", "emptied")), red_packets.c.expires_at <= now)
        .order_by(red_packets.c.expires_at).limit(limit)).scalars().all()
    for packet_id in ids:
        _expire(conn, now, require_packet(conn, packet_id, for_update=True))
    return len(ids)


def do_close_campaign_packets(conn: Connection, now: datetime, campaign_id: str) -> int:
    """Expire a campaign's packets now (it is ending): what is left goes back to its budget."""
    ids = conn.execute(select(red_packets.c.id).where(
        red_packets.c.campaign_id == campaign_id,
        red_packets.c.status.in_(("open", "emptied")))).scalars().all()
    for packet_id in ids:
        _expire(conn, now, require_packet(conn, packet_id, for_update=True))
    return len(ids)


def _source_account(conn: Connection, packet: RedPacket) -> int:
    if packet.campaign_id is not None:
        found = ledger.find_account(conn, packet.campaign_id, Purpose.CAMPAIGN_BUDGET,
                                    packet.currency)
        assert found is not None
        return found.id
    return account_id(conn, packet.sender_id, Purpose.WALLET, packet.currency)


def _expire(conn: Connection, now: datetime, packet: RedPacket) -> None:
    left = packet.amount - packet.amount_taken
    entry_id = None
    if left:
        result = ledger.post(conn, now, Entry(key=f"red_packet_return:{packet.id}", legs=(
            Leg(packet.escrow_account_id, _source_account(conn, packet), left),),
            code="red_packet_return", memo=packet.id))
        entry_id = result.entry_id
    conn.execute(red_packets.update().where(red_packets.c.id == packet.id,
                                            red_packets.c.status == packet.status)
                 .values(status="expired", return_entry_id=entry_id, amount_returned=left))
    events.emit(conn, now, "red_packet.expired", packet.sender_id,
                {"id": packet.id, "amount_returned": left, "currency": packet.currency})


def packet_payload(packet: RedPacket) -> dict[str, object]:
    return {"id": packet.id, "object": "red_packet", "sender_id": packet.sender_id,
            "group_id": packet.group_id, "campaign_id": packet.campaign_id,
            "merchant_id": packet.merchant_id, "split": packet.split, "amount": packet.amount,
            "currency": packet.currency, "shares": packet.shares,
            "shares_taken": packet.shares_taken, "amount_taken": packet.amount_taken,
            "amount_returned": packet.amount_returned, "status": packet.status,
            "expires_at": packet.expires_at.isoformat(),
            "created_at": packet.created_at.isoformat()}
