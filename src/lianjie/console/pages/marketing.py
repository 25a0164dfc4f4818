"""Marketing: campaigns with their budgets burning down and their reports, coupon templates,
segments and red packets; an overview panel of subsidies per hour and a payment-detail section
showing a redeemed coupon and its subsidy leg.

Everyone may look. Money decisions (creating, funding and ending a campaign, issuing coupons)
are admin's and finance's; refreshing a segment is an administrator's. Every change goes
through the marketing context's own ``do_*`` functions inside ``act`` (CSRF, role, audit row,
group committer), so the console refuses exactly what the HTTP API refuses.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, select
from starlette.responses import Response

from lianjie import ledger
from lianjie import marketing as mkt
from lianjie import payments as pay
from lianjie.api.runtime import json, runtime
from lianjie.console import audit, i18n
from lianjie.console.charts import HOUR_US, bucketed, hour_labels, major
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.pages.payments import Section, register_section
from lianjie.console.registry import Page, Panel, register, register_panel
from lianjie.console.web import BUSINESS_TZ, PREFIX, act, guard, language, read_form, render
from lianjie.errors import DomainError, ErrorCode
from lianjie.marketing.schema import coupons
from lianjie.money import DEFAULT_CURRENCY, currency, to_minor
from lianjie.payments import PLATFORM_ID

PAGE = register(Page("marketing", "/marketing", "nav.marketing", order=50))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
MONEY_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.FINANCE})
REFRESH_ROLES = frozenset({ConsoleRole.ADMIN})
CHART_POINTS_MAX = 200
DAYS_MAX = 366
FIELD_MAX = 40
E = ErrorCode

i18n.add_messages({
    "nav.marketing": ("Marketing", "营销"),
    "mkt.campaigns": ("Campaigns", "营销活动"),
    "mkt.coupons": ("Coupons", "优惠券"),
    "mkt.segments": ("Segments", "人群"),
    "mkt.red_packets": ("Red packets", "红包"),
    "mkt.funder": ("Funder", "出资方"),
    "mkt.window": ("Window", "活动时间"),
    "mkt.holdout": ("Holdout", "对照组比例"),
    "mkt.funded": ("Funded", "已注资"),
    "mkt.spent": ("Spent", "已花费"),
    "mkt.paid_out": ("Paid out (coupons, red packets)", "已支出（优惠券、红包）"),
    "mkt.remaining": ("Remaining", "剩余"),
    "mkt.returned": ("Returned", "已退回"),
    "mkt.in_red_packets": ("In red packets", "红包中"),
    "mkt.segment": ("Segment", "人群"),
    "mkt.budget_chart": ("Budget over time (¥)", "预算消耗（元）"),
    "mkt.uplift_chart": ("Treated vs holdout per consumer (holdout = 100)",
                         "实验组与对照组人均对比（对照组 = 100）"),
    "mkt.report": ("Report", "活动报告"),
    "mkt.issued": ("Issued", "已发放"),
    "mkt.claimed": ("Claimed", "已领取"),
    "mkt.redeemed": ("Redeemed", "已核销"),
    "mkt.treated": ("Treated", "实验组"),
    "mkt.holdout_group": ("Holdout", "对照组"),
    "mkt.consumers": ("Consumers", "人数"),
    "mkt.payments": ("Payments", "支付笔数"),
    "mkt.gmv": ("GMV", "交易额"),
    "mkt.payments_per_consumer": ("Payments per consumer", "人均支付笔数"),
    "mkt.gmv_per_consumer": ("GMV per consumer", "人均交易额"),
    "mkt.incremental": ("Incremental payments", "增量支付笔数"),
    "mkt.cost_per_incremental": ("Cost per incremental payment", "每笔增量支付成本"),
    "mkt.new_campaign": ("New campaign", "新建活动"),
    "mkt.name": ("Name", "名称"),
    "mkt.budget_yuan": ("Budget (¥)", "预算（元）"),
    "mkt.amount_yuan": ("Amount (¥)", "金额（元）"),
    "mkt.days": ("Days", "天数"),
    "mkt.holdout_pct": ("Holdout (%)", "对照组（%）"),
    "mkt.funder_hint": ("Funder id (empty: the platform)", "出资方编号（留空为平台）"),
    "mkt.templates": ("Coupon templates", "优惠券模板"),
    "mkt.template": ("Template", "模板"),
    "mkt.discount": ("Discount", "优惠"),
    "mkt.issue_to": ("Issue to segment", "发放给人群"),
    "mkt.members": ("Members", "人数"),
    "mkt.refreshed": ("Last refresh", "最近刷新"),
    "mkt.rule": ("Rule", "规则"),
    "mkt.sender": ("Sender", "发送方"),
    "mkt.shares": ("Shares grabbed", "已抢份数"),
    "mkt.taken": ("Grabbed", "已抢金额"),
    "mkt.expires": ("Expires", "过期时间"),
    "mkt.coupon": ("Coupon", "优惠券"),
    "mkt.campaign": ("Campaign", "活动"),
    "mkt.subsidy_leg": ("Subsidy leg", "补贴分录"),
    "mkt.never": ("never", "从未"),
    "rp.open": ("open", "进行中"),
    "rp.emptied": ("emptied", "已抢完"),
    "rp.expired": ("expired", "已过期"),
    "status.ended": ("ended", "已结束"),
    "status.redeemed": ("redeemed", "已核销"),
    "panel.marketing": ("Subsidies per hour (¥)", "每小时营销补贴（元）"),
    "action.campaign_create": ("create a campaign", "新建营销活动"),
    "action.campaign_fund": ("fund a campaign", "为活动注资"),
    "action.campaign_end": ("end a campaign", "结束营销活动"),
    "action.coupon_issue": ("issue coupons to a segment", "向人群发放优惠券"),
    "action.segment_refresh": ("refresh a segment", "刷新人群"),
    "action.fund": ("Top up", "追加预算"),
    "action.end_campaign": ("End campaign", "结束活动"),
    "action.issue": ("Issue", "发放"),
    "action.refresh": ("Refresh now", "立即刷新"),
    "action.create": ("Create", "创建"),
    "confirm.end_campaign": ("End this campaign and return what is left to its funder?",
                             "确定结束该活动并将剩余预算退回出资方？"),
})


def _bad(message: str, param: str) -> DomainError:
    return DomainError(E.INVALID_REQUEST, message, param)


def _yuan(raw: str, param: str) -> int:
    """A positive amount typed in major units (``12.50``), as minor units."""
    text = raw.strip()[:FIELD_MAX]
    if not text:
        raise _bad(f"{param} is required", param)
    try:
        value = to_minor(text, currency(DEFAULT_CURRENCY))
    except DomainError as exc:
        raise DomainError(exc.code, exc.message, param) from None
    if value <= 0:
        raise DomainError(E.INVALID_AMOUNT, f"{param} must be more than zero", param)
    return value


def _whole(raw: str, param: str, low: int, high: int) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 6 or not low <= int(text) <= high:
        raise _bad(f"{param} must be a whole number from {low} to {high}", param)
    return int(text)


def _tr(request: Request) -> Any:
    lang = language(request)
    return lambda key: i18n.translate(lang, key)


def _snapshot(c: mkt.Campaign, left: int) -> dict[str, Any]:
    return {"status": c.status, "budget": c.budget, "budget_left": left}


# -- campaigns ------------------------------------------------------------------------------

def _campaign_rows(conn: Connection) -> list[tuple[mkt.Campaign, int, str]]:
    found = mkt.recent_campaigns(conn)
    names = {c.funder_id: _party_name(conn, c.funder_id) for c in found}
    return [(c, mkt.budget_left(conn, c), names[c.funder_id]) for c in found]


def _party_name(conn: Connection, party_id: str) -> str:
    party = pay.get_party(conn, party_id)
    return party.name if party else party_id


@PAGE.router.get("/marketing")
async def campaigns(request: Request, op: Viewer) -> Response:
    rows = await runtime(request).read(_campaign_rows)
    found = await runtime(request).read(mkt.all_segments)
    return render(request, op, "marketing_campaigns.html", tab="campaigns", rows=rows,
                  segments=found, money_roles=MONEY_ROLES)


def _campaign_detail(conn: Connection, campaign_id: str) -> dict[str, Any] | None:
    campaign = mkt.get_campaign(conn, campaign_id)
    if campaign is None:
        return None
    templates = mkt.templates_of(conn, campaign_id)
    return {"c": campaign, "funder": _party_name(conn, campaign.funder_id),
            "report": mkt.campaign_report(conn, campaign_id), "templates": templates,
            "redeemed": mkt.redeemed_per_template(conn, campaign_id),
            "segment": mkt.require_segment(conn, campaign.segment_id)
            if campaign.segment_id else None,
            "audit": audit.recent(conn, target=campaign_id, limit=20)}


@PAGE.router.get("/marketing/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: str, op: Viewer) -> Response:
    found = await runtime(request).read(lambda c: _campaign_detail(c, campaign_id))
    if found is None:
        return render(request, op, "not_found.html", status_code=404, what=campaign_id)
    return render(request, op, "marketing_campaign.html", tab="campaigns", **found,
                  money_roles=MONEY_ROLES)


def _thin(points: list[mkt.BudgetPoint]) -> list[mkt.BudgetPoint]:
    """At most ``CHART_POINTS_MAX`` points, always keeping the last."""
    if len(points) <= CHART_POINTS_MAX:
        return points
    step = len(points) / CHART_POINTS_MAX
    picked = [points[int(i * step)] for i in range(CHART_POINTS_MAX - 1)]
    return [*picked, points[-1]]


def campaign_charts(conn: Connection, campaign_id: str, tr: Any) -> dict[str, Any] | None:
    campaign = mkt.get_campaign(conn, campaign_id)
    if campaign is None:
        return None
    exp = currency(campaign.currency).exponent
    points = _thin(mkt.budget_history(conn, campaign))
    budget = {"labels": [p.at.astimezone(BUSINESS_TZ).strftime("%m-%d %H:%M") for p in points],
              "datasets": [
                  {"label": tr("mkt.funded"), "data": [major(p.funded, exp) for p in points]},
                  {"label": tr("mkt.paid_out"), "data": [major(p.spent, exp) for p in points]},
                  {"label": tr("mkt.remaining"),
                   "data": [major(p.remaining, exp) for p in points]}]}
    report = mkt.campaign_report(conn, campaign_id)
    treated, holdout = report["treated"], report["holdout"]
    metrics = ("payments_per_consumer", "gmv_per_consumer")
    # An index (holdout = 100): payments and GMV per consumer differ in scale by far.
    index = [round(100 * treated[m] / holdout[m], 1) if treated[m] is not None and holdout[m]
             else None for m in metrics]
    uplift = {"labels": [tr(f"mkt.{m}") for m in metrics], "datasets": [
        {"label": tr("mkt.treated"), "data": index},
        {"label": tr("mkt.holdout_group"), "data": [100.0 if holdout[m] else None
                                                     for m in metrics]}]}
    return {"charts": {"budget": budget, "uplift": uplift}}


@PAGE.router.get("/api/marketing/campaigns/{campaign_id}")
async def campaign_data(request: Request, campaign_id: str, op: Viewer) -> Response:
    tr = _tr(request)
    found = await runtime(request).read(lambda c: campaign_charts(c, campaign_id, tr))
    if found is None:
        return json({"error": "not_found"}, status=404)
    return json(found)


@PAGE.router.post("/marketing/campaigns")
async def create_campaign(request: Request, op: Viewer) -> Response:
    form = await read_form(request)
    created: list[str] = []

    def change(conn: Connection, now: datetime) -> tuple[None, dict[str, Any]]:
        budget = _yuan(form.get("budget", ""), "budget")
        days = _whole(form.get("days", ""), "days", 1, DAYS_MAX)
        holdout = _whole(form.get("holdout_pct", "0") or "0", "holdout_pct", 0, 50)
        segment_id = form.get("segment_id", "").strip() or None
        campaign = mkt.do_create_campaign(
            conn, now, name=form.get("name", "").strip(),
            funder_id=form.get("funder_id", "").strip() or PLATFORM_ID, budget=budget,
            currency_code=DEFAULT_CURRENCY, starts_at=now, ends_at=now + timedelta(days=days),
            holdout_bps=holdout * 100, segment_id=segment_id)
        created.append(campaign.id)
        return None, {"id": campaign.id, "name": campaign.name, "funder_id":
                      campaign.funder_id, **_snapshot(campaign, budget)}

    response = await act(request, op, action="campaign_create", target=None,
                         roles=MONEY_ROLES, change=change, back=f"{PREFIX}/marketing")
    if created:
        response.headers["location"] = f"{PREFIX}/marketing/campaigns/{created[0]}"
    return response


@PAGE.router.post("/marketing/campaigns/{campaign_id}/fund")
async def fund_campaign(request: Request, campaign_id: str, op: Viewer) -> Response:
    raw = (await read_form(request)).get("amount", "")

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        amount = _yuan(raw, "amount")
        before = mkt.require_campaign(conn, campaign_id)
        before_snap = _snapshot(before, mkt.budget_left(conn, before))
        after = mkt.do_fund_campaign(conn, now, campaign_id, amount)
        return before_snap, _snapshot(after, mkt.budget_left(conn, after))

    return await act(request, op, action="campaign_fund", target=campaign_id,
                     roles=MONEY_ROLES, change=change,
                     back=f"{PREFIX}/marketing/campaigns/{campaign_id}")


@PAGE.router.post("/marketing/campaigns/{campaign_id}/end")
async def end_campaign(request: Request, campaign_id: str, op: Viewer) -> Response:
    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = mkt.require_campaign(conn, campaign_id)
        before_snap = _snapshot(before, mkt.budget_left(conn, before))
        after = mkt.do_end_campaign(conn, now, campaign_id)
        return before_snap, _snapshot(after, mkt.budget_left(conn, after))

    return await act(request, op, action="campaign_end", target=campaign_id,
                     roles=MONEY_ROLES, change=change,
                     back=f"{PREFIX}/marketing/campaigns/{campaign_id}")


# -- coupons --------------------------------------------------------------------------------

def _coupon_rows(conn: Connection) -> list[dict[str, Any]]:
    out = []
    for c in mkt.recent_campaigns(conn):
        redeemed = mkt.redeemed_per_template(conn, c.id)
        for t in mkt.templates_of(conn, c.id):
            out.append({"t": t, "campaign": c, "redeemed": redeemed.get(t.id, 0)})
    return out


@PAGE.router.get("/marketing/coupons")
async def coupon_templates(request: Request, op: Viewer) -> Response:
    rows = await runtime(request).read(_coupon_rows)
    found = await runtime(request).read(mkt.all_segments)
    return render(request, op, "marketing_coupons.html", tab="coupons", rows=rows,
                  segments=found, money_roles=MONEY_ROLES)


@PAGE.router.post("/marketing/coupon_templates/{template_id}/issue")
async def issue(request: Request, template_id: str, op: Viewer) -> Response:
    segment_id = (await read_form(request)).get("segment_id", "").strip()

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = mkt.require_template(conn, template_id)
        done = mkt.do_issue_to_segment(conn, now, template_id, segment_id)
        return {"issued": before.issued}, {
            "segment_id": segment_id, "issued": done.issued, "held_out": done.held_out,
            "skipped": done.skipped}

    return await act(request, op, action="coupon_issue", target=template_id,
                     roles=MONEY_ROLES, change=change, back=f"{PREFIX}/marketing/coupons")


# -- segments and red packets ---------------------------------------------------------------

@PAGE.router.get("/marketing/segments")
async def segment_list(request: Request, op: Viewer) -> Response:
    found = await runtime(request).read(mkt.all_segments)
    return render(request, op, "marketing_segments.html", tab="segments", segments=found,
                  refresh_roles=REFRESH_ROLES)


@PAGE.router.post("/marketing/segments/{segment_id}/refresh")
async def refresh(request: Request, segment_id: str, op: Viewer) -> Response:
    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = mkt.require_segment(conn, segment_id)
        after = mkt.do_refresh_segment(conn, now, segment_id)
        return {"size": before.size}, {"size": after.size}

    return await act(request, op, action="segment_refresh", target=segment_id,
                     roles=REFRESH_ROLES, change=change, back=f"{PREFIX}/marketing/segments")


@PAGE.router.get("/marketing/red_packets")
async def packets(request: Request, op: Viewer) -> Response:
    found = await runtime(request).read(lambda c: mkt.recent_packets(c, 100))
    return render(request, op, "marketing_red_packets.html", tab="red_packets",
                  packets=found)


# -- overview panel and payment section -----------------------------------------------------

def subsidies_per_hour(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    (discounts,) = bucketed(
        conn, "SELECT (redeemed_at - :start) / :width, SUM(discount) FROM mkt_coupons "
              "WHERE redeemed_at >= :start AND redeemed_at < :end GROUP BY 1",
        start, end, HOUR_US, 24)
    (grabbed,) = bucketed(
        conn, "SELECT (created_at - :start) / :width, SUM(amount) FROM mkt_grabs "
              "WHERE campaign_id IS NOT NULL AND created_at >= :start AND created_at < :end "
              "GROUP BY 1", start, end, HOUR_US, 24)
    return {"labels": hour_labels(start), "datasets": [
        {"label": "coupons", "data": [major(a) for a in discounts]},
        {"label": "red_packets", "data": [major(a) for a in grabbed]}]}


register_panel(Panel("marketing", "panel.marketing", "bar", subsidies_per_hour, order=70))


def coupon_section(conn: Connection, order: pay.Order) -> dict[str, Any]:
    row = conn.execute(select(coupons.c.id).where(coupons.c.order_id == order.id)).first()
    if row is None:
        return {"coupon": None}
    coupon = mkt.get_coupon(conn, row.id)
    assert coupon is not None
    campaign = mkt.require_campaign(conn, coupon.campaign_id)
    leg = None
    if order.entry_id is not None:
        entry = ledger.get_entry(conn, order.entry_id)
        legs = [p for p in entry.postings if p.account_id == campaign.budget_account_id] \
            if entry else []
        leg = legs[0] if legs else None
    return {"coupon": coupon, "campaign": campaign, "leg": leg,
            "template": mkt.require_template(conn, coupon.template_id)}


register_section(Section("marketing", "mkt.coupon", "marketing_payment.html",
                         coupon_section, order=60))
