"""Clearing: end of day, settlement and net positions, statements and the signed log,
reconciliation of partners' files.

Every change goes through the clearing context's own functions, the same ones the HTTP API
calls: end of day through ``run_end_of_day`` (a resumable job of its own units of work, so it
runs through ``act_job``), terms, caps, imports and resolutions through their ``do_*`` functions
inside ``act``. Everyone may look; finance and administrators act.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, func, or_, select
from starlette.responses import Response

from lianjie import clearing
from lianjie import payments as pay
from lianjie.api.routes_clearing import MEDIA, clearing_config
from lianjie.api.runtime import runtime
from lianjie.clearing import log, receipts, recon, statements
from lianjie.clearing import schema as cs
from lianjie.console import i18n
from lianjie.console.charts import bucketed
from lianjie.console.operators import ALL_ROLES, ConsoleRole, Operator
from lianjie.console.pages.overview import latest_activity
from lianjie.console.registry import Page, register
from lianjie.console.web import (
    PREFIX,
    SECURITY_HEADERS,
    act,
    act_job,
    guard,
    read_form,
    render,
)
from lianjie.errors import DomainError, ErrorCode
from lianjie.money import currency, to_minor
from lianjie.payments import PartyKind

EOD = register(Page("eod", "/eod", "nav.eod", roles=ALL_ROLES, order=60))
SETTLEMENT = register(Page("settlement", "/settlement", "nav.settlement", roles=ALL_ROLES,
                           order=62))
STATEMENTS = register(Page("statements", "/statements", "nav.statements", roles=ALL_ROLES,
                           order=64))
RECON = register(Page("reconciliation", "/reconciliation", "nav.reconciliation",
                      roles=ALL_ROLES, order=66))
Viewer = Annotated[Operator, Depends(guard(EOD))]
FINANCE_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.FINANCE})
DAYS_SHOWN = 7
DAY_US = 86_400_000_000
PAYOUTS_SHOWN = 200  # the largest of the day; the total counts them all
FORMATS = ("csv", "camt053", "mt940", "proofs")
EXTENSIONS = {"csv": "csv", "camt053": "xml", "mt940": "sta", "proofs": "json"}

i18n.add_messages({
    "nav.eod": ("End of day", "日终"),
    "nav.settlement": ("Settlement", "结算清算"),
    "nav.statements": ("Statements", "对账单"),
    "nav.reconciliation": ("Reconciliation", "对账"),
    "clr.day": ("Business day", "营业日"),
    "clr.show": ("Show", "查看"),
    "clr.over": ("Day over", "已结束"),
    "clr.not_over": ("in progress", "进行中"),
    "clr.run": ("Run end of day", "执行日终"),
    "clr.run_hint": ("Settle merchants, seal the day's log, clear between institutions. "
                     "A rerun resumes; a finished day is left as it is.",
                     "结算商户、封存当日日志、机构间清算。重复执行会从中断处继续，已完成的营业日不变。"),
    "clr.step.credit": ("Credit", "信贷"),
    "clr.credited": ("{n} repayments from receipts", "{n} 笔收款还款"),
    "clr.step.settle": ("Settle", "结算"),
    "clr.step.seal": ("Seal", "封存"),
    "clr.step.clear": ("Clear", "清算"),
    "clr.settled": ("{n} settlements, {amount}", "{n} 笔结算，{amount}"),
    "clr.sealed": ("{n} log entries", "日志 {n} 条"),
    "clr.cleared": ("{p} positions, {i} instructions", "{p} 个头寸，{i} 条指令"),
    "clr.held": ("held: {who}", "暂停：{who}"),
    "clr.payments": ("Payments", "支付笔数"),
    "clr.takings": ("Takings", "交易额"),
    "clr.payouts": ("Merchant payouts", "商户结算款"),
    "clr.total": ("{n} in all", "共 {n} 笔"),
    "clr.largest": ("the {n} largest are shown", "仅显示金额最大的 {n} 笔"),
    "clr.positions": ("Institutions' net positions", "机构净头寸"),
    "clr.instructions": ("Settlement instructions", "结算指令"),
    "clr.merchant": ("Merchant", "商户"),
    "clr.institution": ("Institution", "机构"),
    "clr.value_date": ("Value date", "起息日"),
    "clr.debits": ("Debits", "借方"),
    "clr.credits": ("Credits", "贷方"),
    "clr.net": ("Net", "净额"),
    "clr.cap": ("Net debit cap", "净借记上限"),
    "clr.kind": ("Kind", "类型"),
    "clr.payer": ("Payer", "付款方"),
    "clr.payee": ("Payee", "收款方"),
    "clr.reference": ("Reference", "参考号"),
    "clr.caps": ("Net debit caps", "净借记上限"),
    "clr.terms": ("Merchants' settlement terms", "商户结算条件"),
    "clr.delay": ("Delay (days, T+n)", "结算周期（T+n 天）"),
    "clr.payout_institution": ("Paying institution", "出款机构"),
    "clr.default": ("default", "默认"),
    "clr.set_cap": ("Set cap", "设置上限"),
    "clr.set_terms": ("Set terms", "设置条件"),
    "clr.amount_major": ("Amount (yuan)", "金额（元）"),
    "clr.owner": ("Merchant or institution id", "商户或机构编号"),
    "clr.download": ("Download", "下载"),
    "clr.heads": ("Signed day heads", "已签名的日终树头"),
    "clr.tree_size": ("Tree size", "树大小"),
    "clr.root": ("Root", "根哈希"),
    "clr.prev_root": ("Previous root", "上一根哈希"),
    "clr.key_id": ("Key", "密钥"),
    "clr.verify_chain": ("Verify chain", "校验哈希链"),
    "clr.chain_ok": ("The chain verifies: {n} signed heads, every entry in the ledger hashes "
                     "to its signed root.",
                     "哈希链校验通过：{n} 个签名树头，账本每条分录都与签名根一致。"),
    "clr.chain_bad": ("The chain does NOT verify: {n} findings.", "哈希链校验失败：{n} 项问题。"),
    "clr.institutions": ("Institutions", "机构"),
    "clr.upload": ("Upload a partner file", "上传合作方对账文件"),
    "clr.format": ("Format", "格式"),
    "clr.file": ("File", "文件"),
    "clr.content": ("or paste its content", "或粘贴文件内容"),
    "clr.imports": ("Imported files", "已导入文件"),
    "clr.lines": ("Lines", "行数"),
    "clr.summary": ("Outcome", "结果"),
    "clr.matched": ("Matched", "已匹配"),
    "clr.breaks": ("Breaks", "差异"),
    "clr.ours": ("Ours", "我方"),
    "clr.theirs": ("Theirs", "对方"),
    "clr.resolution": ("Resolution", "处理结果"),
    "clr.reason": ("Reason", "原因"),
    "clr.resolve": ("Resolve", "处理"),
    "clr.correction": ("Correction (optional): debit account, credit account, amount",
                       "更正（可选）：借方账户、贷方账户、金额"),
    "clr.receipt": ("E-receipt", "电子回单"),
    "clr.leaf": ("Leaf {i} of {n}, sealed in the head of {day}",
                 "第 {i} 片叶子（共 {n}），封存于 {day} 的树头"),
    "clr.receipt_download": ("Download the e-receipt with its inclusion proof",
                             "下载含包含证明的电子回单"),
    "clr.not_sealed": ("Not sealed yet: the receipt exists once its business day is sealed.",
                       "尚未封存：营业日封存后才有电子回单。"),
    "outcome.matched": ("matched", "已匹配"),
    "outcome.amount_mismatch": ("amount mismatch", "金额不符"),
    "outcome.date_mismatch": ("date mismatch", "日期不符"),
    "outcome.missing_in_partner": ("missing in partner's file", "对方缺失"),
    "outcome.missing_in_ledger": ("missing in our ledger", "我方缺失"),
    "outcome.duplicate": ("duplicate", "重复"),
    "status.running": ("running", "执行中"),
    "status.done": ("done", "已完成"),
    "status.not_run": ("not run", "未执行"),
    "status.instructed": ("instructed", "已指令"),
    "status.held": ("held", "已暂停"),
    "status.to_loan": ("to loan", "用于还贷"),
    "status.within_cap": ("within cap", "未超上限"),
    "status.cap_exceeded": ("cap exceeded", "超出上限"),
    "status.resolved": ("resolved", "已处理"),
    "action.end_of_day": ("run end of day", "执行日终"),
    "action.net_debit_cap": ("set a net debit cap", "设置净借记上限"),
    "action.settlement_terms": ("set settlement terms", "设置结算条件"),
    "action.recon_import": ("import a reconciliation file", "导入对账文件"),
    "action.recon_resolve": ("resolve a reconciliation break", "处理对账差异"),
})


def _day(raw: str | None, default: date) -> date:
    try:
        return date.fromisoformat(raw) if raw else default
    except ValueError:
        return default


async def _last_day(request: Request) -> date:
    """The default business day: yesterday, or the last day with payments when that is earlier
    (a database loaded by ``lianjie demo`` opens on its simulated day)."""
    rt = runtime(request)
    cfg = clearing_config(request)
    yesterday = cfg.business_date(rt.clock.now()) - timedelta(days=1)
    latest = await rt.read(latest_activity)
    return yesterday if latest is None else min(yesterday, cfg.business_date(latest))


def _form_day(raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise DomainError(ErrorCode.INVALID_REQUEST, "business_date must be a date "
                          "(YYYY-MM-DD)", "business_date") from None


# -- end of day ---------------------------------------------------------------------------------

def eod_days(conn: Connection, cfg: clearing.ClearingConfig, now: datetime, last: date
             ) -> list[dict[str, Any]]:
    """The ``DAYS_SHOWN`` business days up to ``last``: each step's result, counts, totals."""
    first = last - timedelta(days=DAYS_SHOWN - 1)
    runs = {r.business_date: r for r in conn.execute(
        select(cs.runs).where(cs.runs.c.business_date.between(first, last)))}
    steps: dict[date, dict[str, Any]] = {}
    for r in conn.execute(select(cs.steps).where(cs.steps.c.business_date.between(first, last))):
        steps.setdefault(r.business_date, {})[r.step] = json.loads(r.result)
    latest = log.latest_head(conn)
    sealed = None if latest is None else latest.business_date
    # one pass over the week's payments, a bucket per business day (no daylight saving)
    counts, totals = bucketed(
        conn, "SELECT (paid_at - :start) / :width, COUNT(*), SUM(amount) FROM payment_orders "
              "WHERE paid_at >= :start AND paid_at < :end GROUP BY 1",
        cfg.day_start(first), cfg.day_end(last), DAY_US, DAYS_SHOWN, columns=2)
    out = []
    for n in range(DAYS_SHOWN):
        day = last - timedelta(days=n)
        end = cfg.day_end(day)
        count, total = counts[DAYS_SHOWN - 1 - n], totals[DAYS_SHOWN - 1 - n]
        run = runs.get(day)
        status = run.status if run else "not_run"
        # days close in order: one before the last sealed day can no longer be run
        runnable = now >= end and status != "done" and (sealed is None or day > sealed)
        out.append({"day": day, "over": now >= end, "status": status, "runnable": runnable,
                    "started_at": run.started_at if run else None,
                    "finished_at": run.finished_at if run else None,
                    "steps": steps.get(day, {}), "payments": count, "takings": total})
    return out


@EOD.router.get("/eod")
async def eod_page(request: Request, op: Viewer, day: str | None = None) -> Response:
    rt = runtime(request)
    cfg = clearing_config(request)
    default = await _last_day(request)
    last = _day(day, default)
    now = rt.clock.now()
    days = await rt.read(lambda c: eod_days(c, cfg, now, last))
    return render(request, op, "clearing_eod.html", days=days, day=last,
                  default_day=default, steps=clearing.STEPS,
                  can_run=op.role in FINANCE_ROLES)


@EOD.router.post("/eod/run")
async def run_eod(request: Request, op: Viewer) -> Response:
    rt = runtime(request)
    cfg = clearing_config(request)
    raw = (await read_form(request)).get("business_date", "")

    def job() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        day = _form_day(raw)
        report = clearing.run_end_of_day(rt.engine, day, clock=rt.clock, cfg=cfg)
        return None, report.as_json()

    return await act_job(request, op, action="end_of_day", target=raw.strip()[:10] or None,
                         roles=FINANCE_ROLES, job=job, back=f"{PREFIX}/eod")


# -- settlement and clearing --------------------------------------------------------------------

def settlement_day(conn: Connection, day: date) -> dict[str, Any]:
    s, p, i = cs.settlements, cs.positions, cs.instructions
    count, total = conn.execute(select(func.count(), func.coalesce(func.sum(s.c.amount), 0))
                                .where(s.c.business_date == day)).one()
    return {
        "settlements": conn.execute(select(s).where(s.c.business_date == day)
                                    .order_by(s.c.amount.desc(), s.c.merchant_id)
                                    .limit(PAYOUTS_SHOWN)).all(),
        "payout_count": count, "payout_total": total,
        "positions": conn.execute(select(p).where(p.c.business_date == day)
                                  .order_by(p.c.institution_id, p.c.currency)).all(),
        # between institutions, and any held (a merchant's payout is in the table above)
        "instructions": conn.execute(select(i).where(
            i.c.business_date == day, or_(i.c.kind != "merchant_payout", i.c.status == "held"))
            .order_by(i.c.status, i.c.reference)).all(),
        "caps": conn.execute(select(cs.caps).order_by(cs.caps.c.institution_id)).all(),
        "terms": conn.execute(select(cs.terms).order_by(cs.terms.c.merchant_id)).all(),
        "institutions": pay.list_parties(conn, PartyKind.INSTITUTION, limit=100),
    }


@SETTLEMENT.router.get("/settlement")
async def settlement_page(request: Request, op: Viewer, day: str | None = None) -> Response:
    chosen = _day(day, await _last_day(request))
    found = await runtime(request).read(lambda c: settlement_day(c, chosen))
    return render(request, op, "clearing_settlement.html", day=chosen,
                  default_cap=clearing_config(request).net_debit_cap_default,
                  can_edit=op.role in FINANCE_ROLES, **found)


def _minor_amount(raw: str, field: str) -> int:
    try:
        return to_minor(raw.strip(), currency("CNY"))
    except DomainError as exc:
        raise DomainError(exc.code, f"{field}: {exc.message}", field) from None


def _whole(raw: str, field: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise DomainError(ErrorCode.INVALID_REQUEST, f"{field} must be a whole number", field)
    return int(text)


def _row(conn: Connection, table: Any, key: str, value: str) -> dict[str, Any] | None:
    found = conn.execute(select(table).where(table.c[key] == value)).first()
    return None if found is None else {k: v for k, v in found._mapping.items()
                                       if k != "updated_at"}


@SETTLEMENT.router.post("/settlement/caps")
async def set_cap(request: Request, op: Viewer) -> Response:
    form = await read_form(request)
    institution = form.get("institution_id", "").strip()

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        cap = _minor_amount(form.get("net_debit_cap", ""), "net_debit_cap")
        before = _row(conn, cs.caps, "institution_id", institution)
        return before, clearing.do_set_net_debit_cap(conn, now, institution, cap)

    return await act(request, op, action="net_debit_cap", target=institution or None,
                     roles=FINANCE_ROLES, change=change, back=f"{PREFIX}/settlement")


@SETTLEMENT.router.post("/settlement/terms")
async def set_terms(request: Request, op: Viewer) -> Response:
    form = await read_form(request)
    merchant = form.get("merchant_id", "").strip()
    cfg = clearing_config(request)

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        delay = _whole(form.get("delay_days", ""), "delay_days")
        payer = form.get("payout_institution_id", "").strip() or None
        before = _row(conn, cs.terms, "merchant_id", merchant)
        return before, clearing.do_set_settlement_terms(conn, now, cfg, merchant, delay, payer)

    return await act(request, op, action="settlement_terms", target=merchant or None,
                     roles=FINANCE_ROLES, change=change, back=f"{PREFIX}/settlement")


# -- statements and the signed log --------------------------------------------------------------

def _heads(conn: Connection) -> list[dict[str, Any]]:
    out = []
    for h in reversed(clearing.heads(conn)):
        body = json.loads(h.signed_body)
        signed_at = datetime.fromtimestamp(body["timestamp_us"] / 1e6, UTC)
        out.append({"head": h, "body": body, "signed_at": signed_at})
    return out


@STATEMENTS.router.get("/statements")
async def statements_page(request: Request, op: Viewer, day: str | None = None,
                          owner: str = "", verify: int = 0) -> Response:
    rt = runtime(request)
    chosen = _day(day, await _last_day(request))

    def read(conn: Connection) -> dict[str, Any]:
        found: dict[str, Any] = {
            "heads": _heads(conn),
            "institutions": pay.list_parties(conn, PartyKind.INSTITUTION, limit=100)}
        if verify:
            signer = clearing.load_signer()
            found["findings"] = clearing.verify_chain(
                conn, signer.private_key.public_key())
        return found

    found = await rt.read(read)
    return render(request, op, "clearing_statements.html", day=chosen, owner=owner[:64],
                  formats=FORMATS, verified=bool(verify), **found)


@STATEMENTS.router.get("/statements/{owner_id}/{business_date}.{fmt}")
async def download(request: Request, owner_id: str, business_date: str, fmt: str,
                   op: Viewer) -> Response:
    rt = runtime(request)
    cfg = clearing_config(request)

    def read(conn: Connection) -> bytes:
        if fmt not in FORMATS:
            raise DomainError(ErrorCode.INVALID_REQUEST, f"format must be one of {FORMATS}")
        if pay.get_party(conn, owner_id) is None:
            raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no party {owner_id!r}", "owner_id")
        return statements.render(conn, cfg, owner_id, _form_day(business_date), fmt,
                                 rt.clock.now())

    return await _file(request, op, read, f"{owner_id}-{business_date}.{EXTENSIONS.get(fmt)}",
                       MEDIA.get(fmt, ""))


async def _file(request: Request, op: Operator, read: Callable[[Connection], bytes], name: str,
                media_type: str) -> Response:
    """A download, or the reason there is none (404 page with the error code)."""
    try:
        data = await runtime(request).read(read)
    except DomainError as exc:
        return render(request, op, "not_found.html", status_code=404,
                      what=f"{exc.code.value}: {exc.message}")
    return Response(data, media_type=media_type, headers={
        **SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


# -- reconciliation -----------------------------------------------------------------------------

def recon_page_data(conn: Connection, import_id: str | None) -> dict[str, Any]:
    t = cs.recon_imports
    imports = [{**r._mapping, "summary": json.loads(r.summary)} for r in conn.execute(
        select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(20))]
    chosen = import_id or (imports[0]["id"] if imports else None)
    current = None
    if chosen:
        try:
            current = recon.get_import(conn, chosen)
        except DomainError:
            current = None
    return {"imports": imports, "current": current,
            "institutions": pay.list_parties(conn, PartyKind.INSTITUTION, limit=100)}


@RECON.router.get("/reconciliation")
async def recon_page(request: Request, op: Viewer, id: str | None = None) -> Response:
    found = await runtime(request).read(lambda c: recon_page_data(c, id))
    return render(request, op, "clearing_recon.html", day=await _last_day(request),
                  formats=recon.FORMATS, outcomes=recon.OUTCOMES,
                  can_edit=op.role in FINANCE_ROLES, **found)


@RECON.router.post("/reconciliation")
async def recon_import(request: Request, op: Viewer) -> Response:
    form = await read_form(request)
    institution = form.get("institution_id", "").strip()
    cfg = clearing_config(request)

    def change(conn: Connection, now: datetime) -> tuple[None, dict[str, Any]]:
        day = _form_day(form.get("business_date", ""))
        done = recon.do_import(conn, now, cfg, institution, day, form.get("format", ""),
                               form.get("content", "").encode(), "CNY")
        return None, {k: done[k] for k in ("id", "business_date", "format", "file_sha256",
                                           "line_count", "summary")}

    return await act(request, op, action="recon_import", target=institution or None,
                     roles=FINANCE_ROLES, change=change, back=f"{PREFIX}/reconciliation")


@RECON.router.post("/reconciliation/items/{item_id}/resolve")
async def recon_resolve(request: Request, item_id: str, op: Viewer) -> Response:
    form = await read_form(request)
    back = f"{PREFIX}/reconciliation"
    if re.fullmatch(r"rci_[0-9A-Za-z]{1,28}", form.get("import_id", "")):
        back += "?id=" + form["import_id"]

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        correction = _correction(form)
        found = conn.execute(select(cs.recon_items).where(cs.recon_items.c.id == item_id)
                             ).first()
        before = {"status": found.status} if found else {}
        after = recon.do_resolve(conn, now, item_id, form.get("reason", ""),
                                 correction=correction)
        return before, after

    return await act(request, op, action="recon_resolve", target=item_id, roles=FINANCE_ROLES,
                     change=change, back=back)


def _correction(form: dict[str, str]) -> tuple[int, int, int] | None:
    """(debit account, credit account, amount in minor units), or None when left empty."""
    debit, credit = form.get("debit_account_id", "").strip(), form.get(
        "credit_account_id", "").strip()
    amount = form.get("amount", "").strip()
    if not (debit or credit or amount):
        return None
    ids = []
    for name, raw in (("debit_account_id", debit), ("credit_account_id", credit)):
        raw = raw.removeprefix("acc_")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise DomainError(ErrorCode.INVALID_REQUEST, f"{name} must be an account id", name)
        ids.append(int(raw))
    return ids[0], ids[1], _minor_amount(amount, "amount")


# -- the e-receipt on a payment's page ----------------------------------------------------------

def _receipt(conn: Connection, order: pay.Order) -> dict[str, Any]:
    if order.entry_id is None:
        return {"proof": None}
    proof = clearing.inclusion_proof(conn, order.entry_id)
    day = None if proof is None else json.loads(proof["head"]["body"])["business_date"]
    return {"proof": proof, "day": day}


@STATEMENTS.router.get("/receipts/{order_id}.json")
async def receipt(request: Request, order_id: str, op: Viewer) -> Response:
    """The payment's e-receipt: the order and its entry's inclusion proof under a signed head."""
    def read(conn: Connection) -> bytes:
        order = pay.require_order(conn, order_id)
        return json.dumps(receipts.receipt_for(conn, order), indent=1).encode()

    return await _file(request, op, read, f"receipt-{order_id}.json", MEDIA["proofs"])


def _register_section() -> None:
    from lianjie.console.pages.payments import Section, register_section

    register_section(Section("receipt", "clr.receipt", "clearing_receipt.html", _receipt,
                             order=80))


_register_section()
