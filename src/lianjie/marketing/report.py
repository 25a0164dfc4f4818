"""The campaign report: what was issued, claimed, redeemed and spent, and the uplift.

Uplift compares the campaign's treated audience (consumers it gave something to) with its
holdout (the control group that got nothing), over the campaign's window: payments per consumer
and GMV per consumer in each group. The incremental payments are the treated group's payments
less what it would have made at the holdout's rate; the cost per incremental payment is the
budget spent divided by them (``None`` when there is no measurable uplift).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from lianjie.marketing.campaigns import budget_left, require_campaign
from lianjie.marketing.schema import audience, coupons, grabs, red_packets
from lianjie.payments.schema import orders


def _group(conn: Connection, campaign_id: str, holdout: bool, starts_at: datetime,
           ends_at: datetime) -> dict[str, Any]:
    size = conn.execute(select(func.count()).select_from(audience).where(
        audience.c.campaign_id == campaign_id, audience.c.holdout == holdout)).scalar_one()
    joined = audience.join(orders, and_(orders.c.payer_id == audience.c.consumer_id,
                                        orders.c.status == "paid",
                                        orders.c.paid_at >= starts_at,
                                        orders.c.paid_at < ends_at))
    payments, gmv = conn.execute(select(func.count(), func.coalesce(func.sum(orders.c.amount), 0))
                                 .select_from(joined).where(
        audience.c.campaign_id == campaign_id, audience.c.holdout == holdout)).one()
    payments, gmv = int(payments), int(gmv)  # PostgreSQL sums are Decimal
    return {"consumers": int(size), "payments": payments, "gmv": gmv,
            "payments_per_consumer": round(payments / size, 4) if size else None,
            "gmv_per_consumer": round(gmv / size, 2) if size else None}


def campaign_report(conn: Connection, campaign_id: str) -> dict[str, Any]:
    campaign = require_campaign(conn, campaign_id)
    c = coupons
    counts: dict[str, int] = dict(conn.execute(select(c.c.via, func.count()).where(
        c.c.campaign_id == campaign_id).group_by(c.c.via)).all())
    redeemed, discounts, refunded = conn.execute(select(
        func.count(c.c.redeemed_at), func.coalesce(func.sum(c.c.discount), 0),
        func.coalesce(func.sum(c.c.discount_refunded), 0)).where(
        c.c.campaign_id == campaign_id)).one()
    grabbed, grab_amount = conn.execute(select(
        func.count(), func.coalesce(func.sum(grabs.c.amount), 0)).where(
        grabs.c.campaign_id == campaign_id)).one()
    rp = red_packets.c
    packets, held = conn.execute(select(func.count(), func.coalesce(func.sum(
        rp.amount - rp.amount_taken - rp.amount_returned), 0)).where(
        rp.campaign_id == campaign_id)).one()
    left = budget_left(conn, campaign)
    treated = _group(conn, campaign_id, False, campaign.starts_at, campaign.ends_at)
    holdout = _group(conn, campaign_id, True, campaign.starts_at, campaign.ends_at)
    spent = int(discounts) - int(refunded) + int(grab_amount)
    incremental = None
    if treated["consumers"] and holdout["consumers"]:
        expected = treated["consumers"] * holdout["payments"] / holdout["consumers"]
        incremental = round(treated["payments"] - expected, 2)
    return {
        "object": "campaign_report", "campaign_id": campaign.id, "currency": campaign.currency,
        "coupons_issued": int(counts.get("issued", 0)),
        "coupons_claimed": int(counts.get("claimed", 0)), "coupons_redeemed": int(redeemed),
        "red_packets": int(packets), "red_packet_grabs": int(grabbed),
        "budget": campaign.budget, "budget_left": left, "budget_spent": spent,
        "budget_in_red_packets": int(held),
        "treated": treated, "holdout": holdout, "incremental_payments": incremental,
        "cost_per_incremental_payment":
            round(spent / incremental, 2) if incremental and incremental > 0 else None,
    }
