"""Credit: loans with their DPD bucket, a loan's schedule, funders' shares and repayments, and
recording a manual repayment (or a recovery on a written-off loan) through ``do_repay``, the
same function the HTTP API calls. Everyone may look; finance and administrators act.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, select
from starlette.responses import JSONResponse, Response

from lianjie import credit
from lianjie.api.runtime import runtime
from lianjie.console import i18n
from lianjie.console.charts import major, series
from lianjie.console.operators import ALL_ROLES, ConsoleRole, Operator
from lianjie.console.registry import Page, register
from lianjie.console.web import PREFIX, act, guard, language, read_form, render
from lianjie.credit import schedule
from lianjie.credit import schema as credit_schema
from lianjie.credit.loans import DPD_BUCKETS
from lianjie.credit.products import do_set_funder_limit, list_products
from lianjie.credit.schema import repayments
from lianjie.errors import DomainError
from lianjie.ids import new_id
from lianjie.money import currency, to_minor

PAGE = register(Page("loans", "/loans", "nav.loans", roles=ALL_ROLES, order=70))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
REPAY_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.FINANCE})
SHOWN = 100

i18n.add_messages({
    "nav.loans": ("Loans", "贷款"),
    "crd.loans": ("Loans", "贷款"),
    "crd.loan": ("Loan", "贷款"),
    "crd.merchant": ("Merchant", "商户"),
    "crd.status": ("Status", "状态"),
    "crd.bucket": ("DPD bucket", "逾期分档"),
    "crd.principal": ("Principal", "本金"),
    "crd.outstanding": ("Principal outstanding", "未还本金"),
    "crd.owed": ("Owed", "应还"),
    "crd.interest": ("Interest", "利息"),
    "crd.penalty": ("Penalties", "罚息"),
    "crd.funders": ("Funders and shares", "出资方及份额"),
    "crd.funder": ("Funder", "出资方"),
    "crd.share": ("Share", "份额"),
    "crd.interest_paid": ("Interest received", "已收利息"),
    "crd.penalty_paid": ("Penalties received", "已收罚息"),
    "crd.loss": ("Loss", "损失"),
    "crd.written_off": ("Written off", "已核销"),
    "crd.schedule": ("Schedule", "还款计划"),
    "crd.seq": ("#", "期次"),
    "crd.due": ("Due", "到期日"),
    "crd.repayments": ("Repayments", "还款记录"),
    "crd.source": ("Source", "来源"),
    "crd.amount": ("Amount", "金额"),
    "crd.entry": ("Ledger entry", "账务分录"),
    "crd.day": ("Day", "日期"),
    "crd.repay": ("Record repayment", "登记还款"),
    "crd.repay_hint": ("From the merchant's available balance; on a written-off loan it is a "
                       "recovery.", "从商户可用余额扣款；已核销贷款记为回收。"),
    "action.credit_repay": ("record a loan repayment", "登记贷款还款"),
})


def _shares(loan: dict[str, Any]) -> list[dict[str, Any]]:
    """Each funder's part of the loan: principal by its funding, income by share, and the loss
    it booked at write-off (exact: the funder row records it)."""
    out = []
    for f in loan["funders"]:
        share = int(f["share_bps"])
        out.append({**f, "share_pct": share / 100,
                    "interest_paid": loan["interest_paid"] * share // 10_000,
                    "penalty_paid": loan["penalty_paid"] * share // 10_000,
                    "loss": f["written_off_amount"]})
    return out


def _detail(conn: Connection, loan_id: str) -> dict[str, Any]:
    loan = credit.require_loan(conn, loan_id)
    rows = conn.execute(select(repayments).where(repayments.c.loan_id == loan_id)
                        .order_by(repayments.c.created_at)).all()
    sched = [{**i, "due": schedule.date_of(i["due_day"])} for i in loan["schedule"]]
    return {"loan": loan, "shares": _shares(loan), "sched": sched,
            "repaid": [dict(r._mapping) for r in rows]}


@PAGE.router.get("/loans")
async def loan_list(request: Request, op: Viewer, status: str = "") -> Response:
    found = await runtime(request).read(lambda c: credit.list_loans(c, limit=SHOWN))
    if status:
        found = [x for x in found if x["status"] == status]
    return render(request, op, "credit_loans.html", loans=found, status=status)


@PAGE.router.get("/loans/{loan_id}")
async def loan_detail(request: Request, loan_id: str, op: Viewer) -> Response:
    try:
        data = await runtime(request).read(lambda c: _detail(c, loan_id))
    except DomainError:
        return render(request, op, "not_found.html", status_code=404)
    return render(request, op, "credit_loan.html", repay_roles=REPAY_ROLES, **data)


@PAGE.router.post("/loans/{loan_id}/repay")
async def repay(request: Request, loan_id: str, op: Viewer) -> Response:
    raw = (await read_form(request)).get("amount", "")

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = credit.require_loan(conn, loan_id)
        amount = to_minor(raw.strip(), currency(before["currency"]))
        after = credit.do_repay(conn, now, loan_id, amount, new_id("rpy"))
        return ({"owed": before["owed"], "status": before["status"]},
                {"owed": after["owed"], "status": after["status"], "amount": amount})

    return await act(request, op, action="credit_repay", target=loan_id, roles=REPAY_ROLES,
                     change=change, back=f"{PREFIX}/loans/{loan_id}")


FUNDERS = register(Page("funders", "/funders", "nav.funders", roles=ALL_ROLES, order=72))
FunderViewer = Annotated[Operator, Depends(guard(FUNDERS))]

i18n.add_messages({
    "nav.funders": ("Funders", "出资方"),
    "crd.funders_title": ("Funders' exposure", "出资方敞口"),
    "crd.currency": ("Currency", "币种"),
    "crd.exposure_used": ("Exposure used", "已用敞口"),
    "crd.exposure_max": ("Exposure limit", "敞口上限"),
    "crd.active_loans": ("Active loans", "在贷笔数"),
    "crd.income": ("Interest and penalty income", "利息及罚息收入"),
    "crd.losses": ("Credit losses", "信用损失"),
    "crd.set_limit": ("Set limit", "设置上限"),
    "crd.unlimited": ("no limit", "无上限"),
    "action.credit_funder_limit": ("set a funder's exposure limit", "设置出资方敞口上限"),
})


def _funders(conn: Connection) -> list[dict[str, Any]]:
    t = credit_schema.funder_limits
    pairs = {(r.funder_id, r.currency) for r in conn.execute(select(t.c.funder_id, t.c.currency))}
    lf, ln = credit_schema.loan_funders, credit_schema.loans
    pairs |= {(r.funder_id, r.currency) for r in conn.execute(
        select(lf.c.funder_id, ln.c.currency).join(ln, ln.c.id == lf.c.loan_id).distinct())}
    out = []
    for funder_id, cur in sorted(pairs):
        pos = credit.position(conn, funder_id, cur)
        b = pos["balances"]
        pos["income"] = -(b["interest_income"] + b["penalty_income"] + b["fee_income"])
        pos["losses"] = b["credit_loss"]
        out.append(pos)
    return out


@FUNDERS.router.get("/funders")
async def funder_list(request: Request, op: FunderViewer) -> Response:
    found = await runtime(request).read(_funders)
    return render(request, op, "credit_funders.html", funders=found, repay_roles=REPAY_ROLES)


@FUNDERS.router.post("/funders/{funder_id}/limit")
async def set_limit(request: Request, funder_id: str, op: FunderViewer) -> Response:
    form = await read_form(request)
    cur, raw = form.get("currency", "CNY"), form.get("exposure_max", "")

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = credit.position(conn, funder_id, cur)
        amount = to_minor(raw.strip(), currency(cur))
        after = do_set_funder_limit(conn, now, funder_id, cur, amount)
        return {"exposure_max": before["exposure_max"]}, {"exposure_max": after["exposure_max"]}

    return await act(request, op, action="credit_funder_limit", target=funder_id,
                     roles=REPAY_ROLES, change=change, back=f"{PREFIX}/funders")


APPS = register(Page("applications", "/applications", "nav.applications", roles=ALL_ROLES,
                     order=68))
AppViewer = Annotated[Operator, Depends(guard(APPS))]
APP_STATUSES = ("approved", "declined", "accepted", "drawn", "expired")

i18n.add_messages({
    "nav.applications": ("Applications", "贷款申请"),
    "crd.applications": ("Loan applications", "贷款申请"),
    "crd.requested": ("Requested", "申请金额"),
    "crd.reasons": ("Reasons", "原因"),
    "crd.score": ("Score", "评分"),
    "crd.pd": ("PD", "违约概率"),
    "crd.limit": ("Limit", "额度"),
    "crd.rate": ("Rate", "利率"),
    "crd.term": ("Term", "期数"),
    "crd.created": ("Created", "创建时间"),
})


def _applications(conn: Connection, status: str) -> list[dict[str, Any]]:
    t = credit_schema.applications
    query = select(t).order_by(t.c.created_at.desc()).limit(SHOWN)
    if status:
        query = query.where(t.c.status == status)
    return [{**r._mapping, "reasons": json.loads(r.reasons)} for r in conn.execute(query)]


@APPS.router.get("/applications")
async def application_list(request: Request, op: AppViewer, status: str = "") -> Response:
    found = await runtime(request).read(lambda c: _applications(c, status))
    return render(request, op, "credit_applications.html", apps=found, status=status,
                  statuses=APP_STATUSES)


PORTFOLIO = register(Page("portfolio", "/portfolio", "nav.portfolio", roles=ALL_ROLES,
                          order=74))
PortfolioViewer = Annotated[Operator, Depends(guard(PORTFOLIO))]
BUCKETS = [name for _, name in DPD_BUCKETS] + ["90+"]

i18n.add_messages({
    "nav.portfolio": ("Portfolio", "资产组合"),
    "crd.portfolio": ("Credit portfolio", "信贷资产组合"),
    "crd.by_bucket": ("Outstanding by DPD bucket", "按逾期分档的未还本金"),
    "crd.count": ("Loans", "笔数"),
    "crd.products": ("Products", "产品"),
    "crd.name": ("Name", "名称"),
    "crd.vintages": ("Vintage curves: share of principal 30+ days past due or written off, "
                     "by month on book",
                     "账龄曲线：各放款月份逾期30天以上或已核销的本金占比（按账龄月）"),
    "crd.vintage": ("Vintage", "放款月份"),
    "crd.mob": ("MOB {n}", "第{n}月"),
})


def _portfolio(conn: Connection) -> dict[str, Any]:
    ln = credit_schema.loans
    rows = conn.execute(select(ln.c.dpd, ln.c.principal_outstanding)
                        .where(ln.c.status == "active")).all()
    count = dict.fromkeys(BUCKETS, 0)
    outstanding = dict.fromkeys(BUCKETS, 0)
    for r in rows:
        name = credit.bucket(int(r.dpd))
        count[name] += 1
        outstanding[name] += int(r.principal_outstanding)
    vintages = credit.vintage_curves(conn)
    return {"buckets": [{"bucket": b, "count": count[b], "outstanding": outstanding[b]}
                        for b in BUCKETS], "products": list_products(conn),
            "vintages": vintages, "mobs": max((len(v["curve"]) for v in vintages), default=0)}


@PORTFOLIO.router.get("/portfolio")
async def portfolio(request: Request, op: PortfolioViewer) -> Response:
    data = await runtime(request).read(_portfolio)
    return render(request, op, "credit_portfolio.html", **data)


@PORTFOLIO.router.get("/api/portfolio")
async def portfolio_chart(request: Request, op: PortfolioViewer) -> Response:
    data = await runtime(request).read(_portfolio)
    chart = series(BUCKETS, outstanding=[major(b["outstanding"]) for b in data["buckets"]])
    lang = language(request)
    mobs = [i18n.translate(lang, "crd.mob", n=n) for n in range(1, data["mobs"] + 1)]
    vintages = series(mobs, **{v["vintage"]: [round(x * 100, 2) for x in v["curve"]]
                               for v in data["vintages"]})
    return JSONResponse({"charts": {"credit_buckets": chart, "credit_vintages": vintages}})
