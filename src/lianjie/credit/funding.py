"""Funders' ledger accounts and the legs that book each funder's share.

Every funder (the platform or a partner institution) keeps its share of every loan in accounts
it owns, one per ``Purpose``: ``loan_principal`` (debit balance: what borrowers owe it),
``interest_receivable`` / ``interest_income``, ``penalty_receivable`` / ``penalty_income``,
``fee_receivable`` / ``fee_income``, ``credit_loss`` and ``recovery_income``. Disbursement
credits the merchant and debits each funder's ``loan_principal``; a repayment debits the
merchant and credits each funder's receivables and principal. Splits go through ``allocate``:
principal in proportion to each funder's outstanding principal of the loan (so the last
repayment returns exactly what each funder has left), everything else by the loan's shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from lianjie import ledger
from lianjie.ledger import Entry, Leg, Purpose
from lianjie.ledger.model import LEGS_PER_ENTRY_MAX
from lianjie.money import allocate


def account(conn: Connection, now: datetime, owner_id: str, purpose: Purpose,
            currency_code: str) -> int:
    found = ledger.find_account(conn, owner_id, purpose, currency_code)
    if found is not None:
        return found.id
    return ledger.open_account(conn, now, owner_id, purpose, currency_code).id


def split_legs(conn: Connection, now: datetime, currency_code: str, amount: int,
               funders: Sequence[str], weights: Sequence[int], purpose: Purpose,
               other_account: int, *, funder_pays: bool) -> list[Leg]:
    """Legs moving each funder's part of ``amount`` between ``other_account`` and the funder's
    ``purpose`` account: from the funder when ``funder_pays``, else to it."""
    if amount == 0:
        return []
    legs = []
    for funder_id, part in zip(funders, allocate(amount, list(weights)), strict=True):
        if part == 0:
            continue
        mine = account(conn, now, funder_id, purpose, currency_code)
        legs.append(Leg(mine, other_account, part) if funder_pays
                    else Leg(other_account, mine, part))
    return legs


def post_legs(conn: Connection, now: datetime, key: str, code: str, legs: list[Leg],
              memo: str | None = None) -> int:
    """Post ``legs`` as one entry, or several linked ones past the ledger's legs per entry;
    returns the first entry's id. The caller's transaction makes them atomic together."""
    assert legs
    chunks = [legs[i:i + LEGS_PER_ENTRY_MAX] for i in range(0, len(legs), LEGS_PER_ENTRY_MAX)]
    first = 0
    for n, chunk in enumerate(chunks):
        suffix = "" if n == 0 else f":{n}"
        result = ledger.post(conn, now, Entry(key=key + suffix, legs=tuple(chunk), code=code,
                                              memo=memo))
        assert result.entry_id is not None
        first = first or result.entry_id
    return first
