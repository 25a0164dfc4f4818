"""Routes for marketing: consumer groups and red packets, campaigns with their budgets, coupon
templates and coupons, segments, and campaign reports.

Who may do what:
- a consumer creates groups, sends red packets to its groups, grabs, claims coupons and lists
  its own coupons;
- the operator, a merchant or a service provider runs campaigns it funds (the operator's are
  funded by the platform) and the segments it owns; the operator sees every campaign;
- objects a caller may not see answer "not found".
Times on the wire are Unix seconds (``starts_at``, ``ends_at``), as Stripe's are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import StrictInt
from sqlalchemy import Connection
from starlette.responses import Response

from lianjie import marketing as mkt
from lianjie.api import idempotency, views
from lianjie.api.keys import Principal, Role
from lianjie.api.routes_parties import PAGE_LIMIT_MAX, Body, Caller
from lianjie.api.runtime import (
    BatchedKeys,
    Runtime,
    batcher_of,
    current_runtime,
    idempotency_of,
    json,
    require_role,
    stored_response,
)
from lianjie.errors import DomainError, ErrorCode
from lianjie.money import DEFAULT_CURRENCY
from lianjie.payments import PLATFORM_ID

router = APIRouter(prefix="/v1")
RT = Annotated[Runtime, Depends(current_runtime)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]
UNIX_S_MAX = 253_402_300_799  # 9999-12-31
E = ErrorCode


class GroupIn(Body):
    name: str


class MembersIn(Body):
    consumer_ids: list[str]


class RedPacketIn(Body):
    group_id: str
    amount: StrictInt
    shares: StrictInt
    split: Literal["equal", "lucky"] = "lucky"
    currency: str = DEFAULT_CURRENCY
    expires_in_s: StrictInt | None = None


class GrabIn(Body):
    device_id: str | None = None


class CampaignIn(Body):
    name: str
    budget: StrictInt
    currency: str = DEFAULT_CURRENCY
    starts_at: StrictInt | None = None
    ends_at: StrictInt
    holdout_bps: StrictInt = 0
    segment_id: str | None = None
    funder_id: str | None = None


class FundIn(Body):
    amount: StrictInt


class CampaignPacketIn(Body):
    amount: StrictInt
    shares: StrictInt
    split: Literal["equal", "lucky"] = "lucky"
    merchant_id: str | None = None
    per_person_max: StrictInt = 1
    expires_in_s: StrictInt | None = None


class TemplateIn(Body):
    name: str
    kind: Literal["fixed", "percent"]
    amount_off: StrictInt = 0
    percent_bps: StrictInt = 0
    discount_max: StrictInt = 0
    min_spend: StrictInt = 0
    merchant_id: str | None = None
    business_type: str | None = None
    per_person_max: StrictInt = 1
    total_max: StrictInt = 1000
    claimable: bool = True
    valid_s: StrictInt = 7 * 86_400


class IssueIn(Body):
    segment_id: str


class SegmentIn(Body):
    name: str
    rule: dict[str, Any]


def _time(value: int | None, param: str, default: datetime) -> datetime:
    if value is None:
        return default
    if not 0 <= value <= UNIX_S_MAX:
        raise DomainError(E.INVALID_REQUEST, f"{param} is Unix seconds", param)
    return datetime.fromtimestamp(value, UTC)


def _group_view(g: mkt.Group) -> dict[str, Any]:
    return {"id": g.id, "object": "group", "owner_id": g.owner_id, "name": g.name,
            "members": list(g.members), "created_at": g.created_at.isoformat()}


def _grab_view(g: mkt.Grab) -> dict[str, Any]:
    return {"object": "red_packet_grab", "red_packet_id": g.packet_id,
            "consumer_id": g.consumer_id, "seq": g.seq, "amount": g.amount,
            "currency": g.currency, "entry_id": f"txf_{g.entry_id}",
            "created_at": g.created_at.isoformat()}


def _consumer(p: Principal) -> str:
    require_role(p, Role.CONSUMER)
    return p.party_id


# -- groups and red packets ----------------------------------------------------------------

@router.post("/groups", status_code=201, tags=["red packets"])
async def create_group(body: GroupIn, request: Request, rt: RT, p: Caller) -> Response:
    owner = _consumer(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 201, _group_view(mkt.do_create_group(conn, rt.clock.now(), owner, body.name))

    return await rt.mutate(request, p, action)


@router.post("/groups/{group_id}/members", tags=["red packets"])
async def add_members(group_id: str, body: MembersIn, request: Request, rt: RT,
                      p: Caller) -> Response:
    owner = _consumer(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        group = mkt.do_add_members(conn, rt.clock.now(), group_id, owner, body.consumer_ids)
        return 200, _group_view(group)

    return await rt.mutate(request, p, action)


@router.get("/groups/{group_id}", tags=["red packets"])
async def get_group(group_id: str, rt: RT, p: Caller) -> Response:
    group = await rt.read(lambda c: mkt.require_group(c, group_id))
    if p.role != Role.OPERATOR and p.party_id not in group.members:
        raise DomainError(E.GROUP_NOT_FOUND, f"no group {group_id!r}", "id")
    return json(_group_view(group))


@router.post("/red_packets", status_code=201, tags=["red packets"])
async def send_red_packet(body: RedPacketIn, request: Request, rt: RT, p: Caller) -> Response:
    sender = _consumer(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        packet = mkt.do_send(conn, rt.clock.now(), sender, body.group_id, amount=body.amount,
                             currency_code=body.currency, shares=body.shares,
                             split_kind=body.split, expires_in_s=body.expires_in_s)
        return 201, mkt.packet_payload(packet)

    return await rt.mutate(request, p, action)


def _visible_packet(conn: Connection, p: Principal, packet_id: str) -> mkt.RedPacket:
    packet = mkt.require_packet(conn, packet_id)
    if p.role == Role.OPERATOR or packet.group_id is None or packet.sender_id == p.party_id:
        return packet
    if p.party_id in mkt.require_group(conn, packet.group_id).members:
        return packet
    raise DomainError(E.RED_PACKET_NOT_FOUND, f"no red packet {packet_id!r}", "id")


@router.get("/red_packets/{packet_id}", tags=["red packets"])
async def get_red_packet(packet_id: str, rt: RT, p: Caller) -> Response:
    packet = await rt.read(lambda c: _visible_packet(c, p, packet_id))
    return json(mkt.packet_payload(packet))


@router.get("/red_packets/{packet_id}/grabs", tags=["red packets"])
async def list_grabs(packet_id: str, rt: RT, p: Caller, after: int = -1,
                     limit: Limit = 20) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        _visible_packet(conn, p, packet_id)
        found = mkt.grabs_of(conn, packet_id, after_seq=after, limit=limit + 1)
        return views.page([_grab_view(g) for g in found], limit, cursor_field="seq")

    return json(await rt.read(read))


def _grab_batcher(rt: Runtime) -> mkt.GrabBatcher:
    found = batcher_of(rt, "grab", lambda: mkt.GrabBatcher(
        rt.committer, rt.clock, BatchedKeys(lambda grab: (200, _grab_view(grab)))))
    assert isinstance(found, mkt.GrabBatcher)
    return found


@router.post("/red_packets/{packet_id}/grab", tags=["red packets"])
async def grab(packet_id: str, body: GrabIn, request: Request, rt: RT, p: Caller) -> Response:
    """Concurrent grabs share one unit of work (``GrabBatcher``); each request's response is
    stored under its Idempotency-Key in that unit, as ``Runtime.mutate`` would store it."""
    consumer = _consumer(p)
    key, fp = await idempotency_of(request)
    return stored_response(*await grab_once(rt, p, consumer, packet_id, body, key, fp))


async def grab_once(rt: Runtime, p: Principal, consumer: str, packet_id: str, body: GrabIn,
                    key: str, fp: bytes) -> tuple[idempotency.Stored, bool]:
    """A grab through the committer's ``GrabBatcher``: the response and whether it is a
    replay (also run by ``api.fastpath``)."""
    stored, replayed = await _grab_batcher(rt).submit_async(
        mkt.GrabRequest(packet_id, consumer, body.device_id), (p.key_id, key, fp))
    return stored, replayed


# -- campaigns ----------------------------------------------------------------------------

def _funder(p: Principal, funder_id: str | None) -> str:
    require_role(p, Role.OPERATOR, Role.MERCHANT, Role.SERVICE_PROVIDER)
    if p.role == Role.OPERATOR:
        return funder_id or PLATFORM_ID
    if funder_id not in (None, p.party_id):
        raise DomainError(E.FORBIDDEN, "a campaign is funded by its own creator", "funder_id")
    return p.party_id


def _own_campaign(conn: Connection, p: Principal, campaign_id: str, *,
                  for_update: bool = False) -> mkt.Campaign:
    campaign = mkt.get_campaign(conn, campaign_id, for_update=for_update)
    if campaign is None or (p.role != Role.OPERATOR and campaign.funder_id != p.party_id):
        raise DomainError(E.CAMPAIGN_NOT_FOUND, f"no campaign {campaign_id!r}", "id")
    return campaign


def _campaign_view(conn: Connection, c: mkt.Campaign) -> dict[str, Any]:
    return mkt.campaign_payload(c, mkt.budget_left(conn, c))


@router.post("/campaigns", status_code=201, tags=["campaigns"])
async def create_campaign(body: CampaignIn, request: Request, rt: RT, p: Caller) -> Response:
    funder = _funder(p, body.funder_id)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        now = rt.clock.now()
        if body.segment_id is not None:
            _own_segment(conn, p, body.segment_id)
        campaign = mkt.do_create_campaign(
            conn, now, name=body.name, funder_id=funder, budget=body.budget,
            currency_code=body.currency, starts_at=_time(body.starts_at, "starts_at", now),
            ends_at=_time(body.ends_at, "ends_at", now), holdout_bps=body.holdout_bps,
            segment_id=body.segment_id)
        return 201, _campaign_view(conn, campaign)

    return await rt.mutate(request, p, action)


@router.get("/campaigns", tags=["campaigns"])
async def list_campaigns(rt: RT, p: Caller, after: str | None = None,
                         limit: Limit = 20) -> Response:
    require_role(p, Role.OPERATOR, Role.MERCHANT, Role.SERVICE_PROVIDER)
    funder = None if p.role == Role.OPERATOR else p.party_id

    def read(conn: Connection) -> dict[str, Any]:
        found = mkt.list_campaigns(conn, funder_id=funder, after=after, limit=limit + 1)
        return views.page([_campaign_view(conn, c) for c in found], limit)

    return json(await rt.read(read))


@router.get("/campaigns/{campaign_id}", tags=["campaigns"])
async def get_campaign(campaign_id: str, rt: RT, p: Caller) -> Response:
    return json(await rt.read(lambda c: _campaign_view(c, _own_campaign(c, p, campaign_id))))


@router.post("/campaigns/{campaign_id}/end", tags=["campaigns"])
async def end_campaign(campaign_id: str, request: Request, rt: RT, p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_campaign(conn, p, campaign_id, for_update=True)
        return 200, _campaign_view(conn, mkt.do_end_campaign(conn, rt.clock.now(),
                                                             campaign_id))

    return await rt.mutate(request, p, action)


@router.post("/campaigns/{campaign_id}/fund", tags=["campaigns"])
async def fund_campaign(campaign_id: str, body: FundIn, request: Request, rt: RT,
                        p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_campaign(conn, p, campaign_id, for_update=True)
        return 200, _campaign_view(conn, mkt.do_fund_campaign(conn, rt.clock.now(),
                                                              campaign_id, body.amount))

    return await rt.mutate(request, p, action)


@router.get("/campaigns/{campaign_id}/report", tags=["campaigns"])
async def campaign_report(campaign_id: str, rt: RT, p: Caller) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        _own_campaign(conn, p, campaign_id)
        return mkt.campaign_report(conn, campaign_id)

    return json(await rt.read(read))


@router.post("/campaigns/{campaign_id}/red_packets", status_code=201, tags=["campaigns"])
async def create_campaign_packet(campaign_id: str, body: CampaignPacketIn, request: Request,
                                 rt: RT, p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_campaign(conn, p, campaign_id, for_update=True)
        packet = mkt.do_create_campaign_packet(
            conn, rt.clock.now(), campaign_id, amount=body.amount, shares=body.shares,
            split_kind=body.split, merchant_id=body.merchant_id,
            per_person_max=body.per_person_max, expires_in_s=body.expires_in_s)
        return 201, mkt.packet_payload(packet)

    return await rt.mutate(request, p, action)


# -- coupons ------------------------------------------------------------------------------

@router.post("/campaigns/{campaign_id}/coupon_templates", status_code=201, tags=["coupons"])
async def create_template(campaign_id: str, body: TemplateIn, request: Request, rt: RT,
                          p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_campaign(conn, p, campaign_id)
        t = mkt.do_create_template(
            conn, rt.clock.now(), campaign_id, name=body.name, kind=body.kind,
            amount_off=body.amount_off, percent_bps=body.percent_bps,
            discount_max=body.discount_max, min_spend=body.min_spend,
            merchant_id=body.merchant_id, business_type=body.business_type,
            per_person_max=body.per_person_max, total_max=body.total_max,
            claimable=body.claimable, valid_s=body.valid_s)
        return 201, mkt.template_payload(t)

    return await rt.mutate(request, p, action)


@router.get("/campaigns/{campaign_id}/coupon_templates", tags=["coupons"])
async def list_templates(campaign_id: str, rt: RT, p: Caller) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        _own_campaign(conn, p, campaign_id)
        items = [mkt.template_payload(t) for t in mkt.templates_of(conn, campaign_id)]
        return {"object": "list", "data": items, "has_more": False, "next_cursor": None}

    return json(await rt.read(read))


@router.post("/coupon_templates/{template_id}/claim", status_code=201, tags=["coupons"])
async def claim(template_id: str, body: GrabIn, request: Request, rt: RT,
                p: Caller) -> Response:
    consumer = _consumer(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        coupon = mkt.do_claim(conn, rt.clock.now(), template_id, consumer, body.device_id)
        return 201, mkt.coupon_payload(coupon)

    return await rt.mutate(request, p, action)


@router.post("/coupon_templates/{template_id}/issue", tags=["coupons"])
async def issue(template_id: str, body: IssueIn, request: Request, rt: RT,
                p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        template = mkt.require_template(conn, template_id)
        _own_campaign(conn, p, template.campaign_id)
        _own_segment(conn, p, body.segment_id)
        done = mkt.do_issue_to_segment(conn, rt.clock.now(), template_id, body.segment_id)
        return 200, {"object": "coupon_issuance", "template_id": done.template_id,
                     "segment_id": done.segment_id, "issued": done.issued,
                     "held_out": done.held_out, "skipped": done.skipped}

    return await rt.mutate(request, p, action)


@router.get("/coupons", tags=["coupons"])
async def list_coupons(rt: RT, p: Caller, status: str | None = None, after: str | None = None,
                       limit: Limit = 20) -> Response:
    consumer = _consumer(p)
    found = await rt.read(lambda c: mkt.coupons_of(c, consumer, status=status, after=after,
                                                   limit=limit + 1))
    return json(views.page([mkt.coupon_payload(c) for c in found], limit))


# -- segments -----------------------------------------------------------------------------

def _own_segment(conn: Connection, p: Principal, segment_id: str) -> mkt.Segment:
    segment = mkt.require_segment(conn, segment_id)
    if p.role != Role.OPERATOR and segment.owner_id != p.party_id:
        raise DomainError(E.SEGMENT_NOT_FOUND, f"no segment {segment_id!r}", "segment_id")
    return segment


@router.post("/segments", status_code=201, tags=["segments"])
async def create_segment(body: SegmentIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.MERCHANT, Role.SERVICE_PROVIDER)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        segment = mkt.do_create_segment(conn, rt.clock.now(), p.party_id, body.name, body.rule)
        return 201, mkt.segment_payload(segment)

    return await rt.mutate(request, p, action)


@router.get("/segments/{segment_id}", tags=["segments"])
async def get_segment(segment_id: str, rt: RT, p: Caller) -> Response:
    return json(mkt.segment_payload(await rt.read(lambda c: _own_segment(c, p, segment_id))))


@router.post("/segments/{segment_id}/refresh", tags=["segments"])
async def refresh_segment(segment_id: str, request: Request, rt: RT, p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_segment(conn, p, segment_id)
        return 200, mkt.segment_payload(mkt.do_refresh_segment(conn, rt.clock.now(),
                                                               segment_id))

    return await rt.mutate(request, p, action)
