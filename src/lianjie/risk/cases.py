"""Review cases: a reviewed event's money sits in a ledger hold until an operator decides.

``open_case`` is called by the context that placed the hold. An operator claims a case (so two
do not work one case) and approves it (the hold is posted) or rejects it (voided); a case not
decided by ``expires_at`` expires (voided) in the background job. Each ends by calling the
resolver its kind registered, which finishes the domain side (the order becomes ``paid`` or
``declined``) in the same transaction, and labels the decision: approved is legitimate (0),
rejected is fraud (1). Expiry labels nothing: nobody looked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from lianjie import events, ledger
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, EntryKind
from lianjie.risk import schema
from lianjie.risk.engine import Decision, config_of

PAGE_SIZE_MAX = 100
EXPIRE_BATCH_MAX = 1000
NOTE_LENGTH_MAX = 200
STATUSES = ("open", "claimed", "approved", "rejected", "expired")


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    decision_id: str
    kind: str
    subject_id: str
    hold_entry_id: int
    status: str
    assignee: str | None
    note: str | None
    resolved_entry_id: int | None
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None


# kind -> fn(conn, now, case, approved, entry_id): the domain side of a resolution
Resolver = Callable[[Connection, datetime, Case, bool, int], None]
_RESOLVERS: dict[str, Resolver] = {}


def register_resolver(kind: str, resolver: Resolver) -> None:
    _RESOLVERS[kind] = resolver


def _case(row: object) -> Case:
    m = row._mapping  # type: ignore[attr-defined]
    return Case(**{f: m[f] for f in Case.__dataclass_fields__})


def open_case(conn: Connection, now: datetime, decision: Decision, hold_entry_id: int) -> Case:
    """Open the review case of ``decision``, whose money the ledger hold ``hold_entry_id``
    keeps."""
    assert decision.review and decision.id
    case = Case(new_id("case"), decision.id, decision.event.kind, decision.event.subject_id,
                hold_entry_id, "open", None, None, None,
                now + timedelta(seconds=config_of(conn).case_ttl_s), now, None)
    conn.execute(schema.cases.insert().values(**{f: getattr(case, f)
                                                 for f in Case.__dataclass_fields__}))
    events.emit(conn, now, "risk.case_opened", decision.event.actor_id, case_payload(case))
    return case


def get_case(conn: Connection, case_id: str, *, for_update: bool = False) -> Case:
    query = select(schema.cases).where(schema.cases.c.id == case_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first() if isinstance(case_id, str) else None
    if row is None:
        raise DomainError(ErrorCode.RISK_CASE_NOT_FOUND, f"no case {case_id!r}", "id")
    return _case(row)


def list_cases(conn: Connection, *, status: str | None = None, after: str | None = None,
               limit: int = 50) -> list[Case]:
    assert 0 < limit <= PAGE_SIZE_MAX + 1
    if status is not None and status not in STATUSES:
        raise DomainError(ErrorCode.INVALID_REQUEST, f"status is one of {STATUSES}", "status")
    t = schema.cases
    query = select(t)
    if status is not None:
        query = query.where(t.c.status == status)
    if after is not None:
        query = query.where(t.c.id > after)
    return [_case(r) for r in conn.execute(query.order_by(t.c.id).limit(limit))]


def do_claim(conn: Connection, now: datetime, case_id: str, assignee: str) -> Case:
    case = get_case(conn, case_id, for_update=True)
    if case.status == "claimed" and case.assignee == assignee:
        return case
    if case.status != "open":
        raise DomainError(ErrorCode.RISK_CASE_CLOSED if case.status not in ("claimed",)
                          else ErrorCode.RISK_CASE_CLAIMED,
                          f"the case is {case.status}", "id")
    updated = conn.execute(schema.cases.update().where(schema.cases.c.id == case_id,
                                                       schema.cases.c.status == "open")
                           .values(status="claimed", assignee=assignee))
    if updated.rowcount != 1:
        raise DomainError(ErrorCode.RISK_CASE_CLAIMED, "the case was just claimed", "id")
    return get_case(conn, case_id)


def do_decide(conn: Connection, now: datetime, case_id: str, assignee: str, approve: bool,
              note: str | None = None) -> Case:
    """Approve (post the hold) or reject (void it) a case; the claimer or an unclaimed case."""
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_LENGTH_MAX):
        raise DomainError(ErrorCode.INVALID_REQUEST, "note is too long", "note")
    case = get_case(conn, case_id, for_update=True)
    if case.status not in ("open", "claimed"):
        raise DomainError(ErrorCode.RISK_CASE_CLOSED, f"the case is {case.status}", "id")
    if case.status == "claimed" and case.assignee != assignee:
        raise DomainError(ErrorCode.RISK_CASE_CLAIMED, "another operator holds the case", "id")
    return _resolve(conn, now, case, "approved" if approve else "rejected", assignee, note)


def _resolve(conn: Connection, now: datetime, case: Case, status: str, assignee: str | None,
             note: str | None) -> Case:
    kind = EntryKind.POST_PENDING if status == "approved" else EntryKind.VOID_PENDING
    result = ledger.post(conn, now, Entry(key=f"risk:{status}:{case.id}", kind=kind,
                                          pending_id=case.hold_entry_id,
                                          code=f"risk_{status}", memo=case.id))
    assert result.entry_id is not None
    updated = conn.execute(schema.cases.update().where(
        schema.cases.c.id == case.id, schema.cases.c.status.in_(("open", "claimed"))).values(
        status=status, assignee=assignee, note=note, resolved_entry_id=result.entry_id,
        resolved_at=now))
    if updated.rowcount != 1:
        raise DomainError(ErrorCode.RISK_CASE_CLOSED, "the case was just decided", "id")
    if status != "expired":
        conn.execute(schema.decisions.update().where(schema.decisions.c.id == case.decision_id)
                     .values(label=int(status == "rejected"), label_source="case"))
    resolver = _RESOLVERS.get(case.kind)
    if resolver is not None:
        resolver(conn, now, case, status == "approved", result.entry_id)
    done = get_case(conn, case.id)
    events.emit(conn, now, f"risk.case_{status}", case.subject_id, case_payload(done))
    return done


def do_expire_cases(conn: Connection, now: datetime, limit: int = EXPIRE_BATCH_MAX) -> int:
    """Void the holds of cases nobody decided in time; returns how many expired."""
    assert 0 < limit <= EXPIRE_BATCH_MAX
    t = schema.cases
    rows = conn.execute(select(t).where(t.c.status.in_(("open", "claimed")),
                                        t.c.expires_at <= now)
                        .order_by(t.c.expires_at).limit(limit)).all()
    for row in rows:
        _resolve(conn, now, _case(row), "expired", None, None)
    return len(rows)


def case_payload(case: Case) -> dict[str, object]:
    return {"id": case.id, "object": "risk_case", "decision_id": case.decision_id,
            "kind": case.kind, "subject_id": case.subject_id,
            "hold_entry_id": f"txf_{case.hold_entry_id}", "status": case.status,
            "assignee": case.assignee, "note": case.note,
            "resolved_entry_id": f"txf_{case.resolved_entry_id}"
            if case.resolved_entry_id else None,
            "expires_at": case.expires_at.isoformat(), "created_at": case.created_at.isoformat(),
            "resolved_at": case.resolved_at.isoformat() if case.resolved_at else None}
