"""Coupon templates and coupons: issuing, claiming, and redemption inside a payment.

A template belongs to a campaign and says what a coupon is worth: ``fixed`` (``amount_off``)
or ``percent`` (``percent_bps`` of the order, rounded down, at most ``discount_max``), from a
``min_spend``, at one merchant or at merchants of one ``business_type`` (or anywhere), with
``per_person_max`` coupons per consumer and ``total_max`` overall. A coupon is issued to a
segment's members (less the campaign's holdout) or claimed by a consumer.

Redemption happens inside the payment, in its one ledger entry: the consumer's leg shrinks to
the net amount and a leg from the campaign budget pays the discount to the merchant, so the
merchant still receives the order amount (and pays its fee on it):

    consumer wallet  -> merchant pending   amount - discount
    campaign budget  -> merchant pending   discount
    (fee and commission legs as without a coupon)

Refund rule: a refund of ``r`` out of an order of ``amount`` with ``discount`` returns to the
budget the proportional share of the discount (cumulatively rounded down, the last refund
returning the rest, as fees do) and to the consumer the rest of ``r``: the consumer gets back
its proportional paid share, the budget its subsidy share. Once the campaign has ended, the
subsidy share goes to the funder instead (the ended budget was swept back to it). The coupon
stays redeemed: it is not reinstated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, bindparam, func, select

from lianjie import events
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Leg
from lianjie.ledger.schema import accounts as ledger_accounts
from lianjie.marketing import risk
from lianjie.marketing.campaigns import (
    in_holdout,
    require_active,
    require_campaign,
    return_account,
)
from lianjie.marketing.rows import check_name, row_by_id
from lianjie.marketing.schema import (
    audience,
    campaigns,
    coupon_templates,
    coupons,
    segment_members,
)
from lianjie.money import AMOUNT_MAX, BPS_DENOMINATOR, check_amount
from lianjie.payments import PartyKind, require_party
from lianjie.payments.fees import refund_share

if TYPE_CHECKING:
    from lianjie.payments import Order, Party

VALID_S_DEFAULT = 7 * 86_400
VALID_S_MAX = 366 * 86_400
PER_PERSON_MAX_MAX = 100
TOTAL_MAX_MAX = 10_000_000
ISSUE_BATCH_MAX = 10_000
PAGE_SIZE_MAX = 100
KINDS = ("fixed", "percent")
E = ErrorCode


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    campaign_id: str
    name: str
    kind: str
    amount_off: int
    percent_bps: int
    discount_max: int
    min_spend: int
    merchant_id: str | None
    business_type: str | None
    per_person_max: int
    total_max: int
    issued: int
    claimable: bool
    valid_s: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    template_id: str
    campaign_id: str
    consumer_id: str
    via: str
    status: str
    expires_at: datetime
    created_at: datetime
    order_id: str | None
    order_amount: int | None
    discount: int | None
    discount_refunded: int
    redeemed_at: datetime | None


def _template(row: Row[Any]) -> Template:
    m = row._mapping
    return Template(**{f: m[f] for f in Template.__dataclass_fields__})


def _coupon(row: Row[Any]) -> Coupon:
    m = row._mapping
    return Coupon(**{f: m[f] for f in Coupon.__dataclass_fields__})


def get_template(conn: Connection, template_id: str, *, for_update: bool = False
                 ) -> Template | None:
    row = row_by_id(conn, coupon_templates, template_id, for_update=for_update)
    return None if row is None else _template(row)


def require_template(conn: Connection, template_id: str, *, for_update: bool = False
                     ) -> Template:
    found = get_template(conn, template_id, for_update=for_update)
    if found is None:
        raise DomainError(E.COUPON_NOT_FOUND, f"no coupon template {template_id!r}",
                          "template_id")
    return found


def templates_of(conn: Connection, campaign_id: str) -> list[Template]:
    t = coupon_templates
    return [_template(r) for r in conn.execute(
        select(t).where(t.c.campaign_id == campaign_id).order_by(t.c.created_at, t.c.id))]


def get_coupon(conn: Connection, coupon_id: str, *, for_update: bool = False) -> Coupon | None:
    row = row_by_id(conn, coupons, coupon_id, for_update=for_update)
    return None if row is None else _coupon(row)


def coupons_of(conn: Connection, consumer_id: str, *, status: str | None = None,
               after: str | None = None, limit: int = 50) -> list[Coupon]:
    assert 0 < limit <= PAGE_SIZE_MAX + 1
    query = select(coupons).where(coupons.c.consumer_id == consumer_id)
    if status is not None:
        query = query.where(coupons.c.status == status)
    if after is not None:
        query = query.where(coupons.c.id > after)
    return [_coupon(r) for r in conn.execute(query.order_by(coupons.c.id).limit(limit))]


def _int_in(value: object, low: int, high: int, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DomainError(E.INVALID_REQUEST, f"{param} must be from {low} to {high}", param)
    return value


def do_create_template(conn: Connection, now: datetime, campaign_id: str, *, name: str,
                       kind: str, amount_off: int = 0, percent_bps: int = 0,
                       discount_max: int = 0, min_spend: int = 0,
                       merchant_id: str | None = None, business_type: str | None = None,
                       per_person_max: int = 1, total_max: int = 1000, claimable: bool = True,
                       valid_s: int = VALID_S_DEFAULT) -> Template:
    campaign = require_campaign(conn, campaign_id)
    check_name(name)
    if kind not in KINDS:
        raise DomainError(E.INVALID_REQUEST, "kind must be 'fixed' or 'percent'", "kind")
    if kind == "fixed":
        amount_off = check_amount(amount_off)
        percent_bps, discount_max = 0, amount_off
    else:
        percent_bps = _int_in(percent_bps, 1, BPS_DENOMINATOR - 1, "percent_bps")
        discount_max = check_amount(discount_max)
        amount_off = 0
    min_spend = _int_in(min_spend, 0, AMOUNT_MAX, "min_spend")
    if merchant_id is not None:
        require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if business_type is not None and (not isinstance(business_type, str) or
                                      not 0 < len(business_type) <= 40):
        raise DomainError(E.INVALID_REQUEST, "business_type is 1 to 40 characters",
                          "business_type")
    values: dict[str, Any] = dict(
        id=new_id("cpt"), campaign_id=campaign.id, name=name, kind=kind, amount_off=amount_off,
        percent_bps=percent_bps, discount_max=discount_max, min_spend=min_spend,
        merchant_id=merchant_id, business_type=business_type,
        per_person_max=_int_in(per_person_max, 1, PER_PERSON_MAX_MAX, "per_person_max"),
        total_max=_int_in(total_max, 1, TOTAL_MAX_MAX, "total_max"), issued=0,
        claimable=bool(claimable), valid_s=_int_in(valid_s, 60, VALID_S_MAX, "valid_s"),
        created_at=now)
    conn.execute(coupon_templates.insert(), values)
    template = Template(**values)
    events.emit(conn, now, "coupon_template.created", campaign.funder_id,
                template_payload(template))
    return template


# -- issuing and claiming -------------------------------------------------------------------

def _issue(conn: Connection, now: datetime, template: Template, consumer_id: str, via: str
           ) -> Coupon:
    """Issue one coupon within the template's limits (the template row is locked)."""
    held = conn.execute(select(func.count()).select_from(coupons).where(
        coupons.c.template_id == template.id, coupons.c.consumer_id == consumer_id)
    ).scalar_one()
    if held >= template.per_person_max:
        raise DomainError(E.PER_PERSON_LIMIT_REACHED, f"at most {template.per_person_max} of "
                          "this coupon per person", "template_id")
    updated = conn.execute(coupon_templates.update().where(
        coupon_templates.c.id == template.id,
        coupon_templates.c.issued < coupon_templates.c.total_max)
        .values(issued=coupon_templates.c.issued + 1))
    if updated.rowcount != 1:
        raise DomainError(E.COUPON_SOLD_OUT, "every coupon of this template is gone",
                          "template_id")
    values: dict[str, Any] = dict(
        id=new_id("cpn"), template_id=template.id, campaign_id=template.campaign_id,
        consumer_id=consumer_id, via=via, status="active",
        expires_at=now + timedelta(seconds=template.valid_s), created_at=now, order_id=None,
        order_amount=None, discount=None, discount_refunded=0, redeemed_at=None)
    conn.execute(coupons.insert(), values)
    _join_audience(conn, now, template.campaign_id, consumer_id, holdout=False)
    coupon = Coupon(**values)
    events.emit(conn, now, "coupon.issued", consumer_id, coupon_payload(coupon))
    return coupon


def _join_audience(conn: Connection, now: datetime, campaign_id: str, consumer_id: str, *,
                   holdout: bool) -> None:
    known = conn.execute(select(audience.c.holdout).where(
        audience.c.campaign_id == campaign_id, audience.c.consumer_id == consumer_id)).first()
    if known is None:
        conn.execute(audience.insert().values(campaign_id=campaign_id, consumer_id=consumer_id,
                                              holdout=holdout, added_at=now))


def do_claim(conn: Connection, now: datetime, template_id: str, consumer_id: str,
             device_id: str | None = None) -> Coupon:
    """A consumer claims a coupon. Consumers in the campaign's holdout are not eligible."""
    template = require_template(conn, template_id, for_update=True)
    campaign = require_campaign(conn, template.campaign_id)
    require_active(campaign, now)
    consumer = require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_id")
    if not template.claimable:
        raise DomainError(E.NOT_ELIGIBLE, "this coupon is issued, not claimed", "template_id")
    if in_holdout(campaign.id, consumer.id, campaign.holdout_bps):
        raise DomainError(E.NOT_ELIGIBLE, "this offer is not available to you", "template_id")
    risk.screen(conn, now, "claim", consumer_id, template.id, template.discount_max,
                campaign.currency, device_id)
    return _issue(conn, now, template, consumer_id, "claimed")


@dataclass(frozen=True, slots=True)
class Issuance:
    template_id: str
    segment_id: str
    issued: int
    held_out: int
    skipped: int  # at their per-person limit, or the template ran out


def do_issue_to_segment(conn: Connection, now: datetime, template_id: str, segment_id: str
                        ) -> Issuance:
    """Issue one coupon to each member of a segment, less the campaign's holdout, who get
    nothing but are recorded as the control group. At most ``ISSUE_BATCH_MAX`` members."""
    from lianjie.marketing.segments import require_segment
    template = require_template(conn, template_id, for_update=True)
    campaign = require_campaign(conn, template.campaign_id)
    require_active(campaign, now)
    require_segment(conn, segment_id)
    members = conn.execute(select(segment_members.c.consumer_id).where(
        segment_members.c.segment_id == segment_id).order_by(segment_members.c.consumer_id)
        .limit(ISSUE_BATCH_MAX)).scalars().all()
    issued = held_out = skipped = 0
    for consumer_id in members:
        if in_holdout(campaign.id, consumer_id, campaign.holdout_bps):
            _join_audience(conn, now, campaign.id, consumer_id, holdout=True)
            held_out += 1
            continue
        savepoint = conn.begin_nested()
        try:
            _issue(conn, now, template, consumer_id, "issued")
        except DomainError:
            savepoint.rollback()
            skipped += 1
            continue
        savepoint.commit()
        issued += 1
    return Issuance(template_id, segment_id, issued, held_out, skipped)


# -- redemption inside a payment ----------------------------------------------------------

def discount_for(template: Template, amount: int) -> int:
    """What the coupon takes off an order of ``amount`` (at most the whole order)."""
    return _discount(template.kind, template.amount_off, template.percent_bps,
                     template.discount_max, amount)


def _discount(kind: str, amount_off: int, percent_bps: int, discount_max: int, amount: int
              ) -> int:
    if kind == "fixed":
        return min(amount_off, amount)
    return min(amount * percent_bps // BPS_DENOMINATOR, discount_max, amount)


# Redemption is on the payment's path: one prepared query reads the coupon with its template's
# terms, its campaign and what is left of the budget (building statements per call cost more
# than running them; see benchmarks/marketing.py).
_t, _c, _a = coupon_templates.c, campaigns.c, ledger_accounts.c
_REDEEMABLE = select(
    coupons, _t.kind, _t.amount_off, _t.percent_bps, _t.discount_max, _t.min_spend,
    _t.merchant_id.label("t_merchant_id"), _t.business_type, _c.status.label("c_status"),
    _c.starts_at, _c.ends_at, _c.currency, _c.budget_account_id,
    (_a.credits_posted - _a.debits_posted - _a.debits_pending).label("budget_available"),
).select_from(coupons.join(coupon_templates, _t.id == coupons.c.template_id)
              .join(campaigns, _c.id == coupons.c.campaign_id)
              .join(ledger_accounts, _a.id == _c.budget_account_id)
              ).where(coupons.c.id == bindparam("b_id"))
_REDEEMABLE_FOR_UPDATE = _REDEEMABLE.with_for_update(of=coupons)
_REDEEM = coupons.update().where(coupons.c.id == bindparam("b_id"), coupons.c.status == "active")


def _not_applicable(message: str) -> DomainError:
    return DomainError(E.COUPON_NOT_APPLICABLE, message, "coupon_id")


def _check_redeemable(conn: Connection, now: datetime, coupon_id: str, payer_id: str,
                      order: Order, merchant: Party) -> tuple[Coupon, int, int]:
    """The coupon, its discount on ``order`` and its campaign's budget account, or why not."""
    query = _REDEEMABLE_FOR_UPDATE if conn.dialect.name == "postgresql" else _REDEEMABLE
    row = conn.execute(query, {"b_id": coupon_id}).first() \
        if isinstance(coupon_id, str) else None
    if row is None or row.consumer_id != payer_id:
        raise DomainError(E.COUPON_NOT_FOUND, f"no coupon {coupon_id!r}", "coupon_id")
    if row.status != "active":
        raise DomainError(E.COUPON_ALREADY_USED, "the coupon has been used", "coupon_id")
    if now >= row.expires_at:
        raise DomainError(E.COUPON_EXPIRED, "the coupon has expired", "coupon_id")
    if row.c_status != "active" or not row.starts_at <= now < row.ends_at:
        raise DomainError(E.COUPON_EXPIRED, "the coupon's campaign is over", "coupon_id")
    if row.currency != order.currency:
        raise _not_applicable("the coupon is in another currency")
    if row.t_merchant_id is not None and row.t_merchant_id != merchant.id:
        raise _not_applicable("the coupon is for another merchant")
    if row.business_type is not None and row.business_type != merchant.business_type:
        raise _not_applicable("the coupon is for another kind of shop")
    if order.amount < row.min_spend:
        raise _not_applicable(f"the coupon needs a spend of at least {row.min_spend}")
    discount = _discount(row.kind, row.amount_off, row.percent_bps, row.discount_max,
                         order.amount)
    assert 0 < discount <= order.amount
    if row.budget_available < discount:
        # Checked here for a clear code; the budget account's limit flag is what guarantees it.
        raise DomainError(E.CAMPAIGN_BUDGET_EXHAUSTED, "the campaign's budget is spent",
                          "coupon_id")
    coupon = _coupon(row)
    return coupon, discount, int(row.budget_account_id)


def redeem_in_payment(conn: Connection, now: datetime, coupon_id: str, payer_id: str,
                      order: Order, merchant: Party, legs: tuple[Leg, ...],
                      device_id: str | None = None) -> tuple[Leg, ...]:
    """Mark the coupon redeemed by ``order`` and return the payment's legs with the discount
    paid by the campaign budget. Runs inside the payment's unit of work, before its entry;
    ``legs[0]`` is the consumer's wallet paying the merchant the order amount."""
    coupon, discount, budget_account_id = _check_redeemable(conn, now, coupon_id, payer_id,
                                                            order, merchant)
    risk.screen(conn, now, "redeem", payer_id, coupon.id, discount, order.currency, device_id)
    wallet, pending, amount = legs[0].debit_account_id, legs[0].credit_account_id, \
        legs[0].amount
    assert amount == order.amount
    paid = [Leg(wallet, pending, amount - discount)] if discount < amount else []
    updated = conn.execute(_REDEEM, {"b_id": coupon.id, "status": "redeemed",
                                     "order_id": order.id, "order_amount": amount,
                                     "discount": discount, "redeemed_at": now})
    if updated.rowcount != 1:
        raise DomainError(E.COUPON_ALREADY_USED, "the coupon has been used", "coupon_id")
    events.emit(conn, now, "coupon.redeemed", payer_id, coupon_payload(replace(
        coupon, status="redeemed", order_id=order.id, order_amount=amount,
        discount=discount, redeemed_at=now)))
    return (*paid, Leg(budget_account_id, pending, discount), *legs[1:])


def release_for_order(conn: Connection, now: datetime, order_id: str) -> None:
    """A payment held for review was declined (its hold voided, so the budget's discount went
    back): the coupon it used is the consumer's again, as if never redeemed."""
    row = conn.execute(select(coupons).where(coupons.c.order_id == order_id,
                                             coupons.c.status == "redeemed")).first()
    if row is None:
        return
    conn.execute(coupons.update().where(coupons.c.id == row.id).values(
        status="active", order_id=None, order_amount=None, discount=None, redeemed_at=None))
    events.emit(conn, now, "coupon.released", row.consumer_id,
                coupon_payload(replace(_coupon(row), status="active", order_id=None,
                                       order_amount=None, discount=None, redeemed_at=None)))


def refund_legs(conn: Connection, order: Order, amount: int, legs: tuple[Leg, ...]
                ) -> tuple[Leg, ...]:
    """A refund's legs with the subsidy share going back to the campaign budget (the rule is in
    the module docstring). Orders paid without a coupon keep their legs."""
    coupon = conn.execute(select(coupons).where(coupons.c.order_id == order.id)).first()
    if coupon is None:
        return legs
    discount, refunded = int(coupon.discount), int(coupon.discount_refunded)
    share = refund_share(discount, order.amount, order.refunded_amount, amount, refunded)
    if not share:
        return legs
    # Locked: a campaign ending concurrently either sweeps this share from the budget after
    # the refund, or is seen ended here and the share goes to the funder.
    campaign = require_campaign(conn, coupon.campaign_id, for_update=True)
    first = legs[0]
    assert first.amount == amount
    back = [Leg(first.debit_account_id, first.credit_account_id, amount - share)] \
        if share < amount else []
    conn.execute(coupons.update().where(coupons.c.id == coupon.id)
                 .values(discount_refunded=refunded + share))
    return (*back, Leg(first.debit_account_id, return_account(conn, campaign), share),
            *legs[1:])


def template_payload(t: Template) -> dict[str, object]:
    return {"id": t.id, "object": "coupon_template", "campaign_id": t.campaign_id,
            "name": t.name, "kind": t.kind, "amount_off": t.amount_off,
            "percent_bps": t.percent_bps, "discount_max": t.discount_max,
            "min_spend": t.min_spend, "merchant_id": t.merchant_id,
            "business_type": t.business_type, "per_person_max": t.per_person_max,
            "total_max": t.total_max, "issued": t.issued, "claimable": t.claimable,
            "valid_s": t.valid_s}


def coupon_payload(c: Coupon) -> dict[str, object]:
    return {"id": c.id, "object": "coupon", "template_id": c.template_id,
            "campaign_id": c.campaign_id, "consumer_id": c.consumer_id, "via": c.via,
            "status": c.status, "expires_at": c.expires_at.isoformat(),
            "order_id": c.order_id, "discount": c.discount,
            "discount_refunded": c.discount_refunded,
            "redeemed_at": c.redeemed_at.isoformat() if c.redeemed_at else None}
