"""Ledger: account balances, an account's postings, and the result of ``lianjie verify``.

For finance and administrators. ``verify`` re-derives every balance from the postings, so it
runs only when an operator asks for it (a GET, since it changes nothing).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, func, select
from starlette.responses import Response

from lianjie import ledger
from lianjie.api.runtime import runtime
from lianjie.console import i18n
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.registry import Page, register
from lianjie.console.web import guard, render
from lianjie.ledger.schema import accounts, postings

PAGE = register(Page("ledger", "/ledger", "nav.ledger",
                     roles=frozenset({ConsoleRole.ADMIN, ConsoleRole.FINANCE}), order=50))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
PAGE_SIZE = 100
OWNER_LENGTH_MAX = 64

i18n.add_messages({
    "nav.ledger": ("Ledger", "账本"),
    "ledger.owner": ("Owner id", "所属主体编号"),
    "ledger.verify": ("Run lianjie verify", "执行账本校验"),
    "ledger.verified": ("Every invariant holds over {n} accounts.",
                        "共 {n} 个账户，所有不变量均成立。"),
    "ledger.violations": ("{n} violation(s):", "发现 {n} 处违规："),
    "ledger.totals": ("Totals by purpose", "按用途汇总"),
    "ledger.postings": ("Postings", "分录明细"),
    "ledger.newer": ("Newer", "更新"),
    "col.accounts": ("Accounts", "账户数"),
    "col.balance": ("Balance", "余额"),
    "col.pending": ("Pending", "待定"),
    "col.seq": ("Seq", "序号"),
})


def _accounts(conn: Connection, owner: str, purpose: str, offset: int) -> list[ledger.Account]:
    query = select(accounts.c.id)
    if owner:
        query = query.where(accounts.c.owner_id == owner)
    if purpose:
        query = query.where(accounts.c.purpose == purpose)
    ids = conn.execute(query.order_by(accounts.c.id).offset(offset)
                       .limit(PAGE_SIZE + 1)).scalars().all()
    found = ledger.get_accounts(conn, ids)
    return [found[i] for i in ids]


def _totals(conn: Connection) -> list[Any]:
    return list(conn.execute(
        select(accounts.c.purpose, accounts.c.currency, func.count(),
               func.sum(accounts.c.credits_posted - accounts.c.debits_posted))
        .group_by(accounts.c.purpose, accounts.c.currency).order_by(accounts.c.purpose)))


@PAGE.router.get("/ledger")
async def ledger_page(request: Request, op: Viewer, owner: str = "", purpose: str = "",
                      offset: int = 0) -> Response:
    owner = owner.strip()[:OWNER_LENGTH_MAX]
    offset = max(0, min(offset, 10_000_000))

    def read(conn: Connection) -> dict[str, Any]:
        return {"accounts": _accounts(conn, owner, purpose, offset), "totals": _totals(conn)}

    found = await runtime(request).read(read)
    return render(request, op, "ledger.html", owner=owner, purpose=purpose, offset=offset,
                  purposes=[p.value for p in ledger.Purpose], page_size=PAGE_SIZE,
                  has_more=len(found["accounts"]) > PAGE_SIZE,
                  **{**found, "accounts": found["accounts"][:PAGE_SIZE]})


@PAGE.router.get("/ledger/accounts/{account_id}")
async def account(request: Request, account_id: int, op: Viewer,
                  before_seq: int | None = None) -> Response:
    def read(conn: Connection) -> dict[str, Any] | None:
        found = ledger.get_account(conn, account_id)
        if found is None:
            return None
        query = select(postings).where(postings.c.account_id == account_id)
        if before_seq is not None:
            query = query.where(postings.c.account_seq < before_seq)
        rows = list(conn.execute(query.order_by(postings.c.account_seq.desc())
                                 .limit(PAGE_SIZE + 1)))
        return {"account": found, "postings": rows[:PAGE_SIZE],
                "has_more": len(rows) > PAGE_SIZE}

    found = await runtime(request).read(read)
    if found is None:
        return render(request, op, "not_found.html", status_code=404, what=f"acc_{account_id}")
    return render(request, op, "account.html", **found)


@PAGE.router.get("/ledger/verify")
async def verify(request: Request, op: Viewer) -> Response:
    def read(conn: Connection) -> tuple[list[ledger.Violation], int]:
        count = conn.execute(select(func.count()).select_from(accounts)).scalar_one()
        return ledger.verify(conn), int(count)

    violations, count = await runtime(request).read(read)
    return render(request, op, "verify.html", violations=violations, count=count)
