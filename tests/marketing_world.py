"""A small world for the marketing tests: the platform, a bank, consumers with money, a
merchant, all made through the payments context's own actions on a real database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from lianjie import ledger
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.ledger import Purpose

T = TypeVar("T")
CFG = pay.PaymentsConfig()


@dataclass
class World:
    engine: Engine
    clock: ManualClock
    bank: str

    def run(self, fn: Callable[[Connection], T]) -> T:
        return run_now(self.engine, fn)

    def consumer(self, funds: int = 0) -> str:
        def unit(conn: Connection) -> str:
            c = pay.do_create_consumer(conn, self.clock.now(), CFG, "Consumer")
            if funds:
                pay.do_top_up(conn, self.clock.now(), c.id, self.bank, funds, "CNY")
            return c.id
        return self.run(unit)

    def merchant(self, business_type: str = "street_food") -> str:
        def unit(conn: Connection) -> str:
            m = pay.do_onboard_merchant(conn, self.clock.now(), CFG, "Shop", sp_id=None,
                                        business_type=business_type)
            pay.do_decide_kyc(conn, self.clock.now(), m.id, True)
            return m.id
        return self.run(unit)

    def balance(self, owner_id: str, purpose: Purpose = Purpose.WALLET) -> int:
        with self.engine.connect() as conn:
            account = ledger.find_account(conn, owner_id, purpose, "CNY")
            return 0 if account is None else account.balance

    def check(self) -> None:
        with self.engine.connect() as conn:
            ledger.check_invariants(conn)


def make_world(engine: Engine, clock: ManualClock) -> World:
    def unit(conn: Connection) -> str:
        pay.ensure_platform(conn, clock.now(), CFG)
        return pay.do_create_institution(conn, clock.now(), CFG, "Bank").id
    return World(engine, clock, run_now(engine, unit))


def marketing_post_routes(api: Any, w: dict[str, Any]
                          ) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One valid request for every marketing POST route, for the API's bad-input suite:
    (OpenAPI path) -> (path, key, body). Each succeeds once, in this order."""
    alice, bob, op = w["alice"], w["bob"], api.operator_key
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "friends"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [bob["id"]]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 200, "shares": 2})
    ends = int(api.clock.now().timestamp()) + 86_400
    campaign = api.ok("POST", "/v1/campaigns", op,
                      {"name": "A", "budget": 5000, "ends_at": ends})
    ending = api.ok("POST", "/v1/campaigns", op, {"name": "B", "budget": 100, "ends_at": ends})
    template = api.ok("POST", f"/v1/campaigns/{campaign['id']}/coupon_templates", op,
                      {"name": "1 off", "kind": "fixed", "amount_off": 100})
    segment = api.ok("POST", "/v1/segments", op, {"name": "all", "rule": {"kind": "all"}})
    c = f"/v1/campaigns/{campaign['id']}"
    return {
        "/v1/groups": ("/v1/groups", alice["api_key"], {"name": "family"}),
        "/v1/groups/{group_id}/members": (f"/v1/groups/{group['id']}/members",
                                          alice["api_key"], {"consumer_ids": [bob["id"]]}),
        "/v1/red_packets": ("/v1/red_packets", alice["api_key"],
                            {"group_id": group["id"], "amount": 100, "shares": 1}),
        "/v1/red_packets/{packet_id}/grab": (f"/v1/red_packets/{packet['id']}/grab",
                                             bob["api_key"], {}),
        "/v1/campaigns": ("/v1/campaigns", op, {"name": "C", "budget": 100, "ends_at": ends}),
        "/v1/campaigns/{campaign_id}/fund": (f"{c}/fund", op, {"amount": 100}),
        "/v1/campaigns/{campaign_id}/end": (f"/v1/campaigns/{ending['id']}/end", op, {}),
        "/v1/campaigns/{campaign_id}/red_packets": (f"{c}/red_packets", op,
                                                    {"amount": 100, "shares": 2}),
        "/v1/campaigns/{campaign_id}/coupon_templates": (
            f"{c}/coupon_templates", op, {"name": "2 off", "kind": "fixed", "amount_off": 200}),
        "/v1/coupon_templates/{template_id}/claim": (
            f"/v1/coupon_templates/{template['id']}/claim", alice["api_key"], {}),
        "/v1/coupon_templates/{template_id}/issue": (
            f"/v1/coupon_templates/{template['id']}/issue", op, {"segment_id": segment["id"]}),
        "/v1/segments": ("/v1/segments", op, {"name": "new", "rule": {"kind": "new"}}),
        "/v1/segments/{segment_id}/refresh": (f"/v1/segments/{segment['id']}/refresh", op, {}),
    }
