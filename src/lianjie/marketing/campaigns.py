"""Campaigns: a funder, a hard budget, a time window and a holdout group.

The budget is a ledger account of the campaign's own (purpose ``campaign_budget``, flagged so
its debits never exceed its credits): it cannot go below zero, so no coupon redemption or red
packet can spend more than was funded, under any concurrency. Funding is a ledger entry from
the funder's account (the platform's fee revenue, a merchant's available balance, or a service
provider's commission); ending a campaign returns what is left the same way. A campaign is
ended by its funder or an operator, or by the background job once ``ends_at`` has passed
(``do_end_due_campaigns``). A refund's share of a coupon discount that arrives after the campaign
ended goes straight back to the funder (``return_account``), never into the ended budget, where
nothing would ever spend or sweep it.

Holdout: a share ``holdout_bps`` of the target audience is kept as a control group that gets
nothing. Assignment is a hash of (campaign, consumer), so it is deterministic, needs no state
to decide, and is independent between campaigns.

Campaign red packets ("scan to get a red packet", store-visit rewards) are ordinary red packets
funded from the budget, open to anyone (no group), with a per-person limit over the campaign.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import AccountFlags, Entry, Leg, Purpose
from lianjie.marketing import redpackets
from lianjie.marketing.rows import check_name, row_by_id
from lianjie.marketing.schema import campaigns
from lianjie.money import BPS_DENOMINATOR, check_amount, currency
from lianjie.payments import PartyKind, account_id, require_party

HOLDOUT_BPS_MAX = 5000
PER_PERSON_MAX_MAX = 1000
PAGE_SIZE_MAX = 100
END_BATCH_MAX = 100
E = ErrorCode

# Where a funder's money comes from.
_FUNDING_PURPOSE = {PartyKind.PLATFORM: Purpose.FEE_REVENUE,
                    PartyKind.MERCHANT: Purpose.MERCHANT_AVAILABLE,
                    PartyKind.SERVICE_PROVIDER: Purpose.SP_COMMISSION}


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    funder_id: str
    currency: str
    budget: int
    budget_account_id: int
    holdout_bps: int
    starts_at: datetime
    ends_at: datetime
    status: str
    segment_id: str | None
    created_at: datetime


def _campaign(row: Row[Any]) -> Campaign:
    m = row._mapping
    return Campaign(**{f: m[f] for f in Campaign.__dataclass_fields__})


def get_campaign(conn: Connection, campaign_id: str, *, for_update: bool = False
                 ) -> Campaign | None:
    row = row_by_id(conn, campaigns, campaign_id, for_update=for_update)
    return None if row is None else _campaign(row)


def require_campaign(conn: Connection, campaign_id: str, *, for_update: bool = False
                     ) -> Campaign:
    found = get_campaign(conn, campaign_id, for_update=for_update)
    if found is None:
        raise DomainError(E.CAMPAIGN_NOT_FOUND, f"no campaign {campaign_id!r}", "campaign_id")
    return found


def list_campaigns(conn: Connection, *, funder_id: str | None = None, after: str | None = None,
                   limit: int = 50) -> list[Campaign]:
    assert 0 < limit <= PAGE_SIZE_MAX + 1
    query = select(campaigns)
    if funder_id is not None:
        query = query.where(campaigns.c.funder_id == funder_id)
    if after is not None:
        query = query.where(campaigns.c.id > after)
    return [_campaign(r) for r in conn.execute(query.order_by(campaigns.c.id).limit(limit))]


def in_holdout(campaign_id: str, consumer_id: str, holdout_bps: int) -> bool:
    """Deterministic: the same consumer is always in or out of a campaign's control group."""
    digest = hashlib.sha256(f"{campaign_id}:{consumer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BPS_DENOMINATOR < holdout_bps


def budget_left(conn: Connection, campaign: Campaign) -> int:
    account = ledger.get_account(conn, campaign.budget_account_id)
    assert account is not None
    return account.available


def require_active(campaign: Campaign, now: datetime) -> None:
    if campaign.status != "active" or not campaign.starts_at <= now < campaign.ends_at:
        raise DomainError(E.CAMPAIGN_NOT_ACTIVE, "the campaign is not running now",
                          "campaign_id")


def _funding_account(conn: Connection, funder_id: str, cur: str) -> int:
    funder = require_party(conn, funder_id, None, "funder_id")
    purpose = _FUNDING_PURPOSE.get(funder.kind)
    if purpose is None:
        raise DomainError(E.INVALID_REQUEST, "a campaign is funded by the platform, a merchant "
                          "or a service provider", "funder_id")
    return account_id(conn, funder_id, purpose, cur)


def do_create_campaign(conn: Connection, now: datetime, *, name: str, funder_id: str,
                       budget: int, currency_code: str, starts_at: datetime, ends_at: datetime,
                       holdout_bps: int = 0, segment_id: str | None = None) -> Campaign:
    check_name(name)
    budget = check_amount(budget)
    currency(currency_code)
    if not starts_at < ends_at:
        raise DomainError(E.INVALID_REQUEST, "ends_at must be after starts_at", "ends_at")
    if isinstance(holdout_bps, bool) or not isinstance(holdout_bps, int) or \
            not 0 <= holdout_bps <= HOLDOUT_BPS_MAX:
        raise DomainError(E.INVALID_REQUEST, f"holdout_bps must be from 0 to {HOLDOUT_BPS_MAX}",
                          "holdout_bps")
    if segment_id is not None:
        from lianjie.marketing.segments import require_segment
        require_segment(conn, segment_id)
    source = _funding_account(conn, funder_id, currency_code)
    campaign_id = new_id("cmp")
    account = ledger.open_account(conn, now, campaign_id, Purpose.CAMPAIGN_BUDGET,
                                  currency_code, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    ledger.post(conn, now, Entry(key=f"campaign_fund:{campaign_id}:0", legs=(
        Leg(source, account.id, budget),), code="campaign_fund", memo=campaign_id))
    values: dict[str, Any] = dict(
        id=campaign_id, name=name, funder_id=funder_id, currency=currency_code, budget=budget,
        budget_account_id=account.id, holdout_bps=holdout_bps, starts_at=starts_at,
        ends_at=ends_at, status="active", segment_id=segment_id, created_at=now)
    conn.execute(campaigns.insert(), values)
    campaign = Campaign(**values)
    events.emit(conn, now, "campaign.created", funder_id, campaign_payload(campaign, budget))
    return campaign


def do_fund_campaign(conn: Connection, now: datetime, campaign_id: str, amount: int
                     ) -> Campaign:
    """Top up a running campaign's budget from its funder. The entry's key names the budget
    funded before it, which only this top-up (under the campaign's row lock) can have."""
    amount = check_amount(amount)
    campaign = require_campaign(conn, campaign_id, for_update=True)
    if campaign.status != "active":
        raise DomainError(E.CAMPAIGN_NOT_ACTIVE, "an ended campaign cannot be funded",
                          "campaign_id")
    source = _funding_account(conn, campaign.funder_id, campaign.currency)
    ledger.post(conn, now, Entry(key=f"campaign_fund:{campaign_id}:{campaign.budget}", legs=(
        Leg(source, campaign.budget_account_id, amount),), code="campaign_fund",
        memo=campaign_id))
    conn.execute(campaigns.update().where(campaigns.c.id == campaign_id)
                 .values(budget=campaign.budget + amount))
    events.emit(conn, now, "campaign.funded", campaign.funder_id,
                {"id": campaign_id, "amount": amount, "budget": campaign.budget + amount})
    return require_campaign(conn, campaign_id)


def do_end_campaign(conn: Connection, now: datetime, campaign_id: str) -> Campaign:
    """End a campaign: its red packets expire, then what is left of its budget (with what
    came back from them) goes back to the funder. Idempotent."""
    campaign = require_campaign(conn, campaign_id, for_update=True)
    if campaign.status == "ended":
        return campaign
    redpackets.do_close_campaign_packets(conn, now, campaign_id)
    left = budget_left(conn, campaign)
    if left:
        ledger.post(conn, now, Entry(key=f"campaign_return:{campaign_id}", legs=(
            Leg(campaign.budget_account_id,
                _funding_account(conn, campaign.funder_id, campaign.currency), left),),
            code="campaign_return", memo=campaign_id))
    conn.execute(campaigns.update().where(campaigns.c.id == campaign_id)
                 .values(status="ended"))
    events.emit(conn, now, "campaign.ended", campaign.funder_id,
                {"id": campaign_id, "amount_returned": left})
    return require_campaign(conn, campaign_id)


def do_end_due_campaigns(conn: Connection, now: datetime, limit: int = END_BATCH_MAX) -> int:
    """End campaigns whose ``ends_at`` has passed (at most ``limit``): their unspent budget goes
    back to the funder. Returns how many ended."""
    due = conn.execute(select(campaigns.c.id).where(campaigns.c.status == "active",
                                                    campaigns.c.ends_at <= now)
                       .order_by(campaigns.c.ends_at, campaigns.c.id).limit(limit)).scalars()
    ended = 0
    for campaign_id in list(due):
        do_end_campaign(conn, now, campaign_id)
        ended += 1
    return ended


def return_account(conn: Connection, campaign: Campaign) -> int:
    """Where money given back to ``campaign`` goes: its budget while it runs, the funder's own
    account once it has ended (so nothing is stranded in a budget nobody can spend)."""
    if campaign.status == "ended":
        return _funding_account(conn, campaign.funder_id, campaign.currency)
    return campaign.budget_account_id


def do_create_campaign_packet(conn: Connection, now: datetime, campaign_id: str, *,
                              amount: int, shares: int, split_kind: str,
                              merchant_id: str | None = None, per_person_max: int = 1,
                              expires_in_s: int | None = None) -> redpackets.RedPacket:
    """A "scan to get" red packet (or a visit reward at ``merchant_id``) paid from the budget."""
    campaign = require_campaign(conn, campaign_id, for_update=True)
    require_active(campaign, now)
    if isinstance(per_person_max, bool) or not isinstance(per_person_max, int) or \
            not 1 <= per_person_max <= PER_PERSON_MAX_MAX:
        raise DomainError(E.INVALID_REQUEST, f"per_person_max must be from 1 to "
                          f"{PER_PERSON_MAX_MAX}", "per_person_max")
    if merchant_id is not None:
        require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if isinstance(amount, int) and not isinstance(amount, bool) and \
            amount > budget_left(conn, campaign):
        raise DomainError(E.CAMPAIGN_BUDGET_EXHAUSTED, "the campaign's budget cannot pay "
                          "for this red packet", "amount")
    return redpackets.create_packet(
        conn, now, sender_id=campaign.id, source_account_id=campaign.budget_account_id,
        amount=amount, currency_code=campaign.currency, shares=shares, split_kind=split_kind,
        expires_in_s=expires_in_s, campaign_id=campaign.id, merchant_id=merchant_id,
        per_person_max=per_person_max)


def campaign_payload(campaign: Campaign, budget_left_amount: int) -> dict[str, object]:
    return {"id": campaign.id, "object": "campaign", "name": campaign.name,
            "funder_id": campaign.funder_id, "currency": campaign.currency,
            "budget": campaign.budget, "budget_left": budget_left_amount,
            "holdout_bps": campaign.holdout_bps, "status": campaign.status,
            "segment_id": campaign.segment_id, "starts_at": campaign.starts_at.isoformat(),
            "ends_at": campaign.ends_at.isoformat(), "created_at": campaign.created_at.isoformat()}
