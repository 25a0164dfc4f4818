"""Clearing between institutions: net positions, multilateral netting, net debit caps.

An institution's position for a business day is the sum of the day's postings on every ledger
account it owns (wallet top-ups and withdrawals, merchant payouts, loan funding and repayments,
whatever a context books against an institution): credits less debits. Positive, the platform
owes the institution; negative, the institution owes. The day is the segment of the Merkle log
that the day's signed head covers, so each posting is cleared exactly once and every figure can
be proven to a partner.

Multilateral netting pays net debtors to net creditors directly (largest first) with the
platform as central counterparty for what does not net out. A net debit beyond the
institution's cap (Mojaloop's net debit cap) marks its position ``cap_exceeded`` and holds its
instructions for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, text

from lianjie import events
from lianjie.clearing import schema as s
from lianjie.clearing.config import ClearingConfig
from lianjie.ids import new_id
from lianjie.payments import PLATFORM_ID, PartyKind


@dataclass(frozen=True, slots=True)
class Position:
    institution_id: str
    currency: str
    debits: int
    credits: int
    net_debit_cap: int

    @property
    def net(self) -> int:
        return self.credits - self.debits

    @property
    def cap_exceeded(self) -> bool:
        return -self.net > self.net_debit_cap


def positions_for(conn: Connection, cfg: ClearingConfig, start: int, end: int
                  ) -> list[Position]:
    """Positions over the log segment [start, end) of leaf indexes."""
    rows = conn.execute(text(
        "SELECT a.owner_id, a.currency, "
        "SUM(CASE WHEN p.amount < 0 THEN -p.amount ELSE 0 END), "
        "SUM(CASE WHEN p.amount > 0 THEN p.amount ELSE 0 END) "
        "FROM clearing_log_leaves l JOIN ledger_postings p ON p.entry_id = l.entry_id "
        "JOIN ledger_accounts a ON a.id = p.account_id "
        "JOIN parties pa ON pa.id = a.owner_id "
        "WHERE l.leaf_index >= :start AND l.leaf_index < :end AND pa.kind = :kind "
        "GROUP BY a.owner_id, a.currency ORDER BY a.owner_id, a.currency"),
        {"start": start, "end": end, "kind": PartyKind.INSTITUTION.value}).all()
    caps = {r[0]: int(r[1]) for r in conn.execute(
        select(s.caps.c.institution_id, s.caps.c.net_debit_cap))}
    return [Position(r[0], r[1], int(r[2]), int(r[3]),
                     caps.get(r[0], cfg.net_debit_cap_default)) for r in rows]


def net(positions: list[Position]) -> list[tuple[str, str, int]]:
    """Multilateral netting of one currency's positions: (payer, payee, amount) instructions.

    Debtors pay creditors largest first; the platform takes or gives the remainder, so the
    instructions settle every position exactly.
    """
    debtors = sorted(((-p.net, p.institution_id) for p in positions if p.net < 0), reverse=True)
    creditors = sorted(((p.net, p.institution_id) for p in positions if p.net > 0),
                       reverse=True)
    out: list[tuple[str, str, int]] = []
    i = j = 0
    owe = [d[0] for d in debtors]
    due = [c[0] for c in creditors]
    while i < len(debtors) and j < len(creditors):
        amount = min(owe[i], due[j])
        out.append((debtors[i][1], creditors[j][1], amount))
        owe[i] -= amount
        due[j] -= amount
        i += owe[i] == 0
        j += due[j] == 0
    out.extend((debtors[k][1], PLATFORM_ID, owe[k]) for k in range(i, len(debtors)) if owe[k])
    out.extend((PLATFORM_ID, creditors[k][1], due[k]) for k in range(j, len(creditors))
               if due[k])
    return out


def clear_day(conn: Connection, now: datetime, cfg: ClearingConfig, business_date: date,
              start: int, end: int) -> dict[str, Any]:
    """Record the day's positions and netting instructions (value date: the next day)."""
    positions = positions_for(conn, cfg, start, end)
    held = {p.institution_id for p in positions if p.cap_exceeded}
    if positions:
        conn.execute(s.positions.insert(), [
            {"business_date": business_date, "institution_id": p.institution_id,
             "currency": p.currency, "debits": p.debits, "credits": p.credits, "net": p.net,
             "net_debit_cap": p.net_debit_cap,
             "status": "cap_exceeded" if p.cap_exceeded else "within_cap"} for p in positions])
    count = 0
    for currency in sorted({p.currency for p in positions}):
        for n, (payer, payee, amount) in enumerate(
                net([p for p in positions if p.currency == currency])):
            conn.execute(s.instructions.insert().values(
                id=new_id("sti"), business_date=business_date, kind="interbank", payer_id=payer,
                payee_id=payee, amount=amount, currency=currency,
                value_date=business_date + timedelta(days=1),
                reference=f"clr:{business_date.isoformat()}:{currency}:{n}",
                status="held" if held & {payer, payee} else "instructed", created_at=now))
            count += 1
    for inst in sorted(held):
        events.emit(conn, now, "clearing.cap_exceeded", inst,
                    {"object": "clearing_position", "institution_id": inst,
                     "business_date": business_date.isoformat()})
    return {"positions": len(positions), "instructions": count, "cap_exceeded": sorted(held)}
