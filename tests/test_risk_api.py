"""The risk engine end to end over HTTP: block moves nothing but is logged, review holds the
money until a case is decided, rules and lists are managed and refused clearly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from conftest import Api, assert_error
from lianjie import ledger, risk
from lianjie.committer import run_now

REVIEW_BIG = [{"name": "review_big", "expression": "amount >= 5000", "action": "review"}]


def _publish(api: Api, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return api.ok("POST", "/v1/risk/rule_sets", api.operator_key, {"rules": rules, **extra})


def _decisions(api: Api, subject_id: str) -> list[dict[str, Any]]:
    found = api.ok("GET", f"/v1/risk/decisions?subject_id={subject_id}", api.operator_key)
    return list(found["data"])


def _dump_without_log(api: Api) -> dict[str, Any]:
    dump = api.dump()
    dump.pop("risk_decisions")
    return dump


def test_normal_payment_is_allowed_and_logged_with_features(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=10_000)
    order = api.order(shop, amount=1200)
    r = api.call("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"],
                 {"device_id": "dev-alice"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paid"
    (d,) = _decisions(api, order["id"])
    assert d["outcome"] == "allow" and d["kind"] == "payment"
    assert d["actor_id"] == alice["id"] and d["counterparty_id"] == shop["id"]
    assert d["features"]["amount"] == 1200 and d["features"]["first_pair"] == 1
    assert d["rules_version"] == 0 and d["model_version"] == 0


def test_a_blocked_payment_moves_nothing_but_its_decision_is_logged(api: Api) -> None:
    shop, mallory = api.merchant(), api.consumer(funds=10_000)
    api.ok("POST", "/v1/risk/lists", api.operator_key,
           {"list": "block", "value": "dev-stolen", "reason": "reported"})
    order = api.order(shop, amount=3000)
    before = _dump_without_log(api)
    r = api.call("POST", f"/v1/orders/{order['id']}/pay", mallory["api_key"],
                 {"device_id": "dev-stolen"})
    assert_error(r, 402, "risk_declined")
    assert _dump_without_log(api) == before
    (d,) = _decisions(api, order["id"])
    assert d["outcome"] == "block" and "blocklisted_device" in d["fired"]
    assert api.get_order(order)["status"] == "open"
    assert api.balance(mallory) == 10_000
    # A P2P from the same device is blocked too; the static code path as well.
    bob = api.consumer()
    r = api.call("POST", "/v1/wallet/transfers", mallory["api_key"],
                 {"recipient_id": bob["id"], "amount": 100, "device_id": "dev-stolen"})
    assert_error(r, 402, "risk_declined")
    r = api.call("POST", "/v1/wallet/withdrawals", mallory["api_key"],
                 {"institution_id": api.institution["id"], "amount": 100,
                  "device_id": "dev-stolen"})
    assert_error(r, 402, "risk_declined")
    assert api.balance(mallory) == 10_000 and api.balance(bob) == 0
    api.verify()


def test_review_holds_the_money_until_approved(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=10_000)
    _publish(api, REVIEW_BIG)
    order = api.order(shop, amount=6000)
    paid = api.pay(alice, order)
    assert paid.status_code == 200 and paid.json()["status"] == "reviewing"
    wallet = api.ok("GET", "/v1/wallet", alice["api_key"])
    assert wallet["balance"] == 10_000 and wallet["available"] == 4000  # held, not moved
    assert api.account_balance(shop["id"], "merchant_pending") == 0
    # Paying it again is refused while it is in review.
    assert_error(api.pay(api.consumer(funds=10_000), order), 409, "risk_review_pending")
    (case,) = api.ok("GET", "/v1/risk/cases?status=open", api.operator_key)["data"]
    assert case["subject_id"] == order["id"]
    api.ok("POST", f"/v1/risk/cases/{case['id']}/claim", api.operator_key)
    done = api.ok("POST", f"/v1/risk/cases/{case['id']}/decision", api.operator_key,
                  {"approve": True})
    assert done["status"] == "approved"
    assert api.get_order(order)["status"] == "paid"
    assert api.balance(alice) == 4000
    assert api.account_balance(shop["id"], "merchant_pending") > 0
    (d,) = _decisions(api, order["id"])
    assert d["outcome"] == "review" and d["label"] == 0  # approved: a legitimate label
    # Deciding again is refused and changes nothing.
    api.refused(409, "risk_case_closed", "POST", f"/v1/risk/cases/{case['id']}/decision",
                api.operator_key, {"approve": False})
    api.verify()


def test_review_rejected_or_expired_releases_the_hold(api: Api) -> None:
    shop, alice, bob = api.merchant(), api.consumer(funds=20_000), api.consumer()
    _publish(api, REVIEW_BIG)
    order = api.order(shop, amount=6000)
    assert api.pay(alice, order).json()["status"] == "reviewing"
    sent = api.ok("POST", "/v1/wallet/transfers", alice["api_key"],
                  {"recipient_id": bob["id"], "amount": 7000})
    cases = api.ok("GET", "/v1/risk/cases", api.operator_key)["data"]
    by_subject = {c["subject_id"]: c for c in cases}
    assert set(by_subject) == {order["id"], sent["id"]}
    api.ok("POST", f"/v1/risk/cases/{by_subject[order['id']]['id']}/decision",
           api.operator_key, {"approve": False, "note": "stolen wallet"})
    assert api.get_order(order)["status"] == "declined"
    assert api.ok("GET", "/v1/wallet", alice["api_key"])["available"] == 13_000
    # The P2P case expires in the background job: the hold is voided.
    api.clock.advance(timedelta(days=2))
    api.background.tick()
    case = api.ok("GET", f"/v1/risk/cases/{by_subject[sent['id']]['id']}", api.operator_key)
    assert case["status"] == "expired"
    wallet = api.ok("GET", "/v1/wallet", alice["api_key"])
    assert wallet["balance"] == wallet["available"] == 20_000
    assert api.balance(bob) == 0
    (d,) = _decisions(api, order["id"])
    assert d["label"] == 1  # rejected: a fraud label
    api.verify()


def test_two_operators_race_to_decide_one_case(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=10_000)
    _publish(api, REVIEW_BIG)
    order = api.order(shop, amount=6000)
    api.pay(alice, order)
    (case,) = api.ok("GET", "/v1/risk/cases", api.operator_key)["data"]
    path = f"/v1/risk/cases/{case['id']}/decision"
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(
            lambda approve: api.call("POST", path, api.operator_key, {"approve": approve}),
            [True, False, True, False]))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 1
    for r in responses:
        if r.status_code != 200:
            assert_error(r, 409, "risk_case_closed")
    final = "paid" if ok[0].json()["status"] == "approved" else "declined"
    assert api.get_order(order)["status"] == final
    assert api.balance(alice) == (4000 if final == "paid" else 10_000)
    api.verify()


def test_a_bad_rule_set_is_refused_and_the_active_version_stays(api: Api) -> None:
    _publish(api, REVIEW_BIG)
    for rules, words in (
        ([{"name": "x", "expression": "amount >"}], "does not compile"),
        ([{"name": "x", "expression": "no_such_feature > 3"}], "unknown features"),
        ([{"name": "x", "expression": "category > 3"}], "does not evaluate"),
        ([{"name": "x", "expression": "amount + 1"}], "true or false"),
    ):
        err = api.refused(400, "risk_rule_invalid", "POST", "/v1/risk/rule_sets",
                          api.operator_key, {"rules": rules})
        assert words in err["message"], err
    api.refused(400, "risk_rule_invalid", "POST", "/v1/risk/rule_sets", api.operator_key,
                {"rules": REVIEW_BIG, "review_score": 50, "block_score": 10})
    active = api.ok("GET", "/v1/risk/rules", api.operator_key)
    assert active["version"] == 1 and [r["name"] for r in active["rules"]] == ["review_big"]
    # Non-operators cannot touch rules.
    shop = api.merchant()
    api.refused(403, "forbidden", "POST", "/v1/risk/rule_sets", shop["api_key"],
                {"rules": REVIEW_BIG})


def test_shadow_rules_are_logged_and_never_act_and_lists_expire(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=50_000)
    _publish(api, [{"name": "would_block", "expression": "amount >= 1", "action": "block",
                    "shadow": True},
                   {"name": "listed", "expression": "actor_blocked == 1", "action": "block"}])
    order = api.order(shop, amount=1000)
    assert api.pay(alice, order).json()["status"] == "paid"
    (d,) = _decisions(api, order["id"])
    assert d["outcome"] == "allow" and d["fired"] == ["shadow:would_block"]
    api.ok("POST", "/v1/risk/lists", api.operator_key,
           {"list": "block", "value": alice["id"], "ttl_s": 3600})
    assert_error(api.pay(alice, api.order(shop)), 402, "risk_declined")
    api.clock.advance(timedelta(hours=2))  # the entry expired: it no longer blocks
    assert api.pay(alice, api.order(shop)).json()["status"] == "paid"
    api.ok("POST", f"/v1/risk/lists/block/{alice['id']}/remove", api.operator_key)
    api.refused(404, "not_found", "POST", f"/v1/risk/lists/block/{alice['id']}/remove",
                api.operator_key)


def test_velocity_survives_a_restart(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=50_000)
    for _ in range(3):
        assert api.pay(alice, api.order(shop, amount=500)).status_code == 200
    now = api.clock.now()
    event = risk.Event("payment", "probe", alice["id"], 500, "CNY", shop["id"])
    live = risk.engine.refresh_and_features(api.rt.engine, now, event)
    # A new process: a fresh engine object on the same database rebuilds from the log.
    from lianjie.db import make_engine
    other = make_engine(str(api.rt.engine.url.render_as_string(hide_password=False)))
    try:
        rebuilt = risk.engine.refresh_and_features(other, now, event)
    finally:
        other.dispose()
    assert live["c_count_1h"] == rebuilt["c_count_1h"] == 3
    assert live["m_sum_24h"] == rebuilt["m_sum_24h"] == 1500
    assert rebuilt["first_pair"] == 0


def test_blocked_decision_is_logged_outside_the_http_path_too(api: Api) -> None:
    engine = api.rt.engine
    run_now(engine, lambda c: risk.do_add_to_list(c, api.clock.now(), "block", "cus_x"))

    def unit(conn: Any) -> None:
        risk.decide(conn, api.clock.now(), risk.Event("payment", "ord_x", "cus_x", 100, "CNY"))

    try:
        run_now(engine, unit)
    except risk.RiskDeclined as exc:
        assert exc.decision.outcome == "block"
    else:
        raise AssertionError("not declined")
    (d,) = _decisions(api, "ord_x")
    assert d["outcome"] == "block"
    with engine.connect() as conn:
        assert ledger.verify(conn) == []


def test_backtest_and_training_over_http(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=50_000)
    for amount in (1000, 2000, 7000):
        api.pay(alice, api.order(shop, amount=amount))
    report = api.ok("POST", "/v1/risk/backtests", api.operator_key,
                    {"rules": REVIEW_BIG, "model_version": 0})
    assert report["live"]["flagged"] == 0 and report["live"]["events"] == 3
    assert report["candidate"]["flagged"] == 1 and report["candidate"]["amount_flagged"] == 7000
    api.refused(404, "not_found", "POST", "/v1/risk/backtests", api.operator_key,
                {"model_version": 9})
    # Three unlabelled decisions cannot train a model: refused, nothing registered.
    api.refused(400, "risk_model_invalid", "POST", "/v1/risk/models/train", api.operator_key,
                {})
    assert api.ok("GET", "/v1/risk/models", api.operator_key)["data"] == []


def test_velocity_is_exact_when_payments_race(api: Api) -> None:
    """Twelve payments from one wallet at once: each decision sees exactly the ones decided
    before it, so the counts they saw are 0 to 11, each once."""
    shop, alice = api.merchant(), api.consumer(funds=50_000)
    orders = [api.order(shop, amount=300) for _ in range(12)]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda o: api.pay(alice, o), orders))
    assert all(r.status_code == 200 for r in responses)
    seen = sorted(_decisions(api, o["id"])[0]["features"]["c_count_1m"] for o in orders)
    assert seen == list(range(12))
    assert api.balance(alice) == 50_000 - 12 * 300
