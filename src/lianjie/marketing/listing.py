"""Reads for operators: recent red packets, every segment, coupon counts per template, and a
campaign budget's history from its ledger postings (for the console's pages and charts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from lianjie.ledger.schema import entries, postings
from lianjie.marketing.campaigns import Campaign, get_campaign
from lianjie.marketing.redpackets import RedPacket, get_packet
from lianjie.marketing.schema import campaigns, coupons, red_packets, segments
from lianjie.marketing.segments import Segment, get_segment

LIST_MAX = 200
HISTORY_MAX = 5000


def recent_campaigns(conn: Connection, limit: int = 100) -> list[Campaign]:
    """The newest campaigns first."""
    assert 0 < limit <= LIST_MAX
    ids = conn.execute(select(campaigns.c.id).order_by(campaigns.c.created_at.desc(),
                                                       campaigns.c.id).limit(limit)).scalars()
    return [c for c in (get_campaign(conn, i) for i in ids) if c is not None]


def recent_packets(conn: Connection, limit: int = 50) -> list[RedPacket]:
    assert 0 < limit <= LIST_MAX
    ids = conn.execute(select(red_packets.c.id).order_by(red_packets.c.created_at.desc(),
                                                         red_packets.c.id.desc())
                       .limit(limit)).scalars().all()
    return [p for p in (get_packet(conn, i) for i in ids) if p is not None]


def all_segments(conn: Connection, limit: int = LIST_MAX) -> list[Segment]:
    assert 0 < limit <= LIST_MAX
    ids = conn.execute(select(segments.c.id).order_by(segments.c.created_at.desc(),
                                                      segments.c.id).limit(limit)).scalars()
    return [s for s in (get_segment(conn, i) for i in ids) if s is not None]


def redeemed_per_template(conn: Connection, campaign_id: str) -> dict[str, int]:
    """Template id -> coupons of it redeemed."""
    rows = conn.execute(select(coupons.c.template_id, func.count(coupons.c.redeemed_at)).where(
        coupons.c.campaign_id == campaign_id).group_by(coupons.c.template_id)).all()
    return {str(t): int(n) for t, n in rows}


@dataclass(frozen=True, slots=True)
class BudgetPoint:
    at: datetime
    funded: int  # funded so far
    returned: int  # given back to the funder so far
    remaining: int  # the budget account's balance

    @property
    def spent(self) -> int:
        """Gone to consumers (discounts, red packets) net of what came back."""
        return self.funded - self.returned - self.remaining


def budget_history(conn: Connection, campaign: Campaign) -> list[BudgetPoint]:
    """One point per posting to the campaign's budget account, oldest first (the latest
    ``HISTORY_MAX``). Walks back from today's totals: funded is the campaign's budget."""
    p, e = postings, entries
    coded = select(p.c.created_at, p.c.amount, p.c.balance_after, e.c.code).join(
        e, e.c.id == p.c.entry_id).where(p.c.account_id == campaign.budget_account_id)
    rows = conn.execute(coded.order_by(p.c.account_seq.desc()).limit(HISTORY_MAX)).all()
    returned = abs(int(conn.execute(
        select(func.coalesce(func.sum(p.c.amount), 0)).join(e, e.c.id == p.c.entry_id).where(
            p.c.account_id == campaign.budget_account_id, e.c.code == "campaign_return"))
        .scalar_one()))
    funded = campaign.budget
    out = []
    for at, amount, balance, code in rows:
        out.append(BudgetPoint(at, funded, returned, int(balance)))
        if code == "campaign_fund":
            funded -= abs(int(amount))
        elif code == "campaign_return":
            returned -= abs(int(amount))
    out.reverse()
    return out
