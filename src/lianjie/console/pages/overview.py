"""Overview: the business day in figures and charts that update live.

The day shown is the one asked for (``?day=YYYY-MM-DD``, a business day in China's time) or else
the last day with any payment, so a database loaded by the simulator shows its simulated day
whatever today's date is. ``/console/api/overview`` serves the figures and every panel's chart
data as JSON; the page polls it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, func, select, text
from starlette.responses import Response

from lianjie.api.runtime import json, runtime
from lianjie.clock import to_us
from lianjie.console import i18n
from lianjie.console.charts import (
    HOUR_US,
    MINUTE_US,
    bucket_labels,
    bucketed,
    hour_labels,
    major,
    series,
)
from lianjie.console.operators import Operator
from lianjie.console.registry import Page, Panel, panels_for, register, register_panel
from lianjie.console.web import BUSINESS_TZ, day_bounds, guard, money, render
from lianjie.payments.schema import orders

PAGE = register(Page("overview", "/overview", "nav.overview", order=10))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
TOP_N = 10
POLL_S = 5

i18n.add_messages({
    "nav.overview": ("Overview", "总览"),
    "overview.day": ("Business day", "营业日"),
    "overview.show": ("Show", "查看"),
    "overview.live": ("Updates live every {s} s", "每 {s} 秒自动刷新"),
    "stat.takings": ("Takings", "交易额"),
    "stat.payments": ("Payments", "支付笔数"),
    "stat.success_rate": ("Success rate", "支付成功率"),
    "stat.refunds": ("Refunds", "退款"),
    "stat.average": ("Average ticket", "笔均金额"),
    "panel.takings": ("Takings per hour (¥)", "每小时交易额（元）"),
    "panel.per_minute": ("Payments per minute", "每分钟支付笔数"),
    "panel.success_rate": ("Success rate per hour (%)", "每小时支付成功率（%）"),
    "panel.refunds": ("Refunds per hour (¥)", "每小时退款金额（元）"),
    "panel.top_merchants": ("Top merchants by takings (¥)", "交易额最高的商户（元）"),
    "panel.top_sps": ("Top service providers by takings (¥)", "交易额最高的服务商（元）"),
    "panel.risk": ("Risk blocks and reviews", "风控拦截与人工审核"),
    "panel.risk.absent": ("Shown here once the risk capability is installed.",
                          "安装风控模块后在此显示。"),
})


def latest_activity(conn: Connection) -> datetime | None:
    value: datetime | None = conn.execute(select(func.max(orders.c.created_at))).scalar()
    return value


def takings(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    (amounts,) = bucketed(conn, "SELECT (paid_at - :start) / :width, SUM(amount) "
                          "FROM payment_orders WHERE paid_at >= :start AND paid_at < :end "
                          "GROUP BY 1", start, end, HOUR_US, 24)
    return series(hour_labels(start), takings=[major(a) for a in amounts])


def per_minute(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    (counts,) = bucketed(conn, "SELECT (paid_at - :start) / :width, COUNT(*) "
                         "FROM payment_orders WHERE paid_at >= :start AND paid_at < :end "
                         "GROUP BY 1", start, end, MINUTE_US, 1440)
    labels = bucket_labels(start, 1440, timedelta(minutes=1), BUSINESS_TZ)
    return series(labels, payments=counts)


def success_rate(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    created, paid = bucketed(
        conn, "SELECT (created_at - :start) / :width, COUNT(*), "
              "SUM(CASE WHEN paid_at IS NOT NULL THEN 1 ELSE 0 END) FROM payment_orders "
              "WHERE created_at >= :start AND created_at < :end GROUP BY 1",
        start, end, HOUR_US, 24, columns=2)
    return series(hour_labels(start), success_rate=[round(100 * p / c, 1) if c else None
                                               for c, p in zip(created, paid, strict=True)])


def refunds(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    (amounts,) = bucketed(conn, "SELECT (created_at - :start) / :width, SUM(amount) "
                          "FROM refunds WHERE created_at >= :start AND created_at < :end "
                          "GROUP BY 1", start, end, HOUR_US, 24)
    return series(hour_labels(start), refunds=[major(a) for a in amounts])


def _top(conn: Connection, column: str, start: datetime, end: datetime) -> dict[str, Any]:
    rows = conn.execute(text(
        f"SELECT o.{column}, p.name, SUM(o.amount) AS total FROM payment_orders o "
        f"JOIN parties p ON p.id = o.{column} WHERE o.paid_at >= :start AND o.paid_at < :end "
        f"GROUP BY o.{column}, p.name ORDER BY total DESC LIMIT {TOP_N}"),
        {"start": to_us(start), "end": to_us(end)}).all()
    return series([r[1] for r in rows], takings=[major(r[2]) for r in rows])


def top_merchants(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    return _top(conn, "merchant_id", start, end)


def top_service_providers(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    return _top(conn, "sp_id", start, end)


register_panel(Panel("takings", "panel.takings", "bar", takings, order=10))
register_panel(Panel("per_minute", "panel.per_minute", "line", per_minute, order=20))
register_panel(Panel("success_rate", "panel.success_rate", "line", success_rate, order=30))
register_panel(Panel("refunds", "panel.refunds", "bar", refunds, order=40))
register_panel(Panel("top_merchants", "panel.top_merchants", "hbar", top_merchants, order=50))
register_panel(Panel("top_sps", "panel.top_sps", "hbar", top_service_providers, order=60))


def figures(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    s, e = to_us(start), to_us(end)
    paid_n, paid_sum = conn.execute(text(
        "SELECT COUNT(*), SUM(amount) FROM payment_orders WHERE paid_at >= :s AND paid_at < :e"),
        {"s": s, "e": e}).one()
    created_n = conn.execute(text(
        "SELECT COUNT(*) FROM payment_orders WHERE created_at >= :s AND created_at < :e "
        "AND status <> 'open'"), {"s": s, "e": e}).scalar_one()
    refund_n, refund_sum = conn.execute(text(
        "SELECT COUNT(*), SUM(amount) FROM refunds WHERE created_at >= :s AND created_at < :e"),
        {"s": s, "e": e}).one()
    rate = f"{100 * paid_n / created_n:.1f}%" if created_n else "-"
    return {"takings": money(int(paid_sum or 0)), "payments": f"{paid_n:,}",
            "success_rate": rate,
            "refunds": f"{refund_n:,} · {money(int(refund_sum or 0))}",
            "average": money(int(paid_sum or 0) // paid_n if paid_n else 0)}


@PAGE.router.get("/overview")
async def overview(request: Request, op: Viewer, day: str | None = None) -> Response:
    rt = runtime(request)
    latest = await rt.read(latest_activity)
    _start, _end, chosen = day_bounds(day, latest)
    return render(request, op, "overview.html", day=chosen, panels=panels_for(op.role),
                  poll_s=POLL_S)


@PAGE.router.get("/api/overview")
async def overview_data(request: Request, op: Viewer, day: str | None = None) -> Response:
    rt = runtime(request)
    visible = panels_for(op.role)

    def read(conn: Connection) -> dict[str, Any]:
        start, end, chosen = day_bounds(day, latest_activity(conn))
        return {"day": chosen, "figures": figures(conn, start, end),
                "charts": {p.key: p.data(conn, start, end) for p in visible}}

    return json(await rt.read(read))
