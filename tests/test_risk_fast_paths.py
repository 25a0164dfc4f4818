"""The decision's fast paths give what the plain ones give: LightGBM's single-row predict equals
``Booster.predict`` (scores and SHAP reasons), all rules in one CEL call fire the same rules as
one call each (and a rule that fails at run time is named while the others still count), and
a change made earlier in the same transaction is seen by the next decision."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import Engine

from lianjie import risk
from lianjie.clock import ManualClock
from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk.engine import evaluate
from lianjie.risk.features import MODEL_FEATURES


def test_single_row_predict_equals_booster_predict() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, len(MODEL_FEATURES))) * 100
    y = (x[:, 0] + 0.5 * x[:, 7] + rng.normal(size=600) * 40 > 50).astype(int)
    text, _ = models.train(x, y, np.arange(600.0), np.abs(x[:, 0]), MODEL_FEATURES)
    model = models.load_text(1, text, MODEL_FEATURES)
    for row in x[:60]:
        feats = dict(zip(MODEL_FEATURES, row.tolist(), strict=True))
        assert model.score(feats) == float(model.booster.predict(row[None, :],
                                                                 num_threads=1)[0])
        contrib = model.booster.predict(row[None, :], pred_contrib=True, num_threads=1)[0]
        top = np.argsort(contrib[:-1])[::-1][:models.REASONS_MAX]
        assert model.reasons(feats) == [(MODEL_FEATURES[i], round(float(contrib[i]), 4))
                                        for i in top if contrib[i] > 0]


def test_one_cel_call_fires_what_one_call_per_rule_fires() -> None:
    compiled = rulesets.compile_set(rulesets.DEFAULT_SET)
    feats = rulesets._sample_features()
    for changes in ({}, {"new_device": 1, "amount": 60_000, "c_count_1h": 5},
                    {"actor_blocked": 1}, {"d_accounts": 6, "device_group_size": 12},
                    {"is_p2p": 1, "loop_back": 1, "amount": 200_000, "first_pair": 1}):
        f = {**feats, **changes}
        fired, failed = evaluate(rulesets.batch(compiled), f)
        assert (fired, failed) == evaluate(compiled, f) and not failed
        assert bool(fired) == bool(changes)
    # ``1000 / (c_count_1m - 1)`` fails when the count is 1: the list fails as a whole, so the
    # rules run one by one; the failing one is named and the others still fire.
    bad = rulesets.compile_set(rulesets.RuleSet(0, (
        rulesets.Rule("ratio", "1000 / (c_count_1m - 1) > 5", "score", 1.0),
        rulesets.Rule("big", "amount >= 100", "score", 1.0))))
    f = {**feats, "c_count_1m": 3, "amount": 500}
    assert evaluate(rulesets.batch(bad), f) == evaluate(bad, f)
    f["c_count_1m"] = 1
    fired, failed = evaluate(rulesets.batch(bad), f)
    assert [r.name for r in fired] == ["big"] and failed == ["ratio"]


def test_remembered_inputs_fire_what_running_the_rules_fires() -> None:
    """The memo of fired rules answers only for inputs equal in type as well as value: an int
    where the rule compares with a float fails in CEL, even after the float version was
    remembered, and ``-0.0`` is not ``0.0`` (``1.0 / x`` tells them apart)."""
    feats = rulesets._sample_features()
    batch = rulesets.batch(rulesets.compile_set(rulesets.RuleSet(0, (
        rulesets.Rule("ratio", "amount_vs_consumer_avg >= 2.0", "score", 1.0),
        rulesets.Rule("sign", "1.0 / account_age_days < 0.0", "score", 1.0)))))
    one_by_one = batch.compiled
    for ratio, age in ((2.0, 0.5), (2.0, 0.5), (2, 0.5), (2.0, 0.0), (2.0, -0.0),
                       (2.0, -0.0), (1.5, 0.0)):
        f = {**feats, "amount_vs_consumer_avg": ratio, "account_age_days": age}
        assert evaluate(batch, f) == evaluate(one_by_one, f), (ratio, age)
    fired, _ = evaluate(batch, {**feats, "account_age_days": -0.0, "amount_vs_consumer_avg": 3.0})
    assert [r.name for r in fired] == ["ratio", "sign"]
    assert 0 < len(batch.fired) <= rulesets.FIRED_MEMO_MAX
    for key in ((1,), (1.0,), (True,), (0.0,), (-0.0,)):
        assert rulesets.memo_key(key) is not None
    assert len({rulesets.memo_key(k) for k in ((1,), (1.0,), (True,), (0.0,), (-0.0,))}) == 5
    for never in ((float("nan"),), (float("inf"),), (None,), ("null",), (2**70,)):
        assert rulesets.memo_key(never) is None


def test_a_change_earlier_in_the_transaction_is_seen(engine: Engine) -> None:
    clock = ManualClock()
    event = risk.Event("p2p", "p2p_1", "cus_a", 500, "CNY", "cus_b", device_id="dev_1")
    with engine.begin() as conn:
        assert risk.decide(conn, clock.now(), event).outcome == "allow"
        risk.do_add_to_list(conn, clock.now(), "block", "dev_1", ttl_s=3600)
        try:
            risk.decide(conn, clock.now(), event)
        except risk.RiskDeclined as exc:
            assert exc.decision.fired == ("blocklisted_device",)
        else:
            raise AssertionError("the device was put on the block list in this transaction")
        rulesets.do_publish(conn, clock.now(), [
            rulesets.Rule("allow_small", "amount < 1000", "allow")])
        assert risk.decide(conn, clock.now() + timedelta(seconds=1), event).fired == (
            "allow_small",)
