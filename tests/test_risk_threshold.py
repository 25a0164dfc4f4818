"""The model's threshold is chosen for the rules it serves beside: the engine adds the rules'
score points to the model's, so a threshold chosen for the model alone lets more legitimate
events be stopped than the budget once rules add their points. Training counts what the rules
stop (and how close they bring an event) against the same budget, on the validation slice."""

from __future__ import annotations

import math

import numpy as np

from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk import training
from lianjie.risk.engine import model_headroom, outcome_of
from lianjie.risk.features import MODEL_FEATURES

RULES = rulesets.RuleSet(1, (
    rulesets.Rule("big", "amount >= 3000", "score", 20.0),
    rulesets.Rule("bigger", "amount >= 4000", "score", 10.0),
    rulesets.Rule("burst", "c_count_1h >= 59 && amount >= 4900", "review"),
    rulesets.Rule("trusted", "c_count_1h == 7", "allow"),
    rulesets.Rule("watch", "amount >= 10", "score", 100.0, shadow=True),
))


def test_the_headroom_says_exactly_when_outcome_of_stops_an_event() -> None:
    rng = np.random.default_rng(11)
    rules = list(RULES.rules)
    for _ in range(3000):
        fired = [r for r in rules if rng.random() < 0.4]
        p, threshold = float(rng.random()), float(rng.uniform(0.01, 1.0))
        outcome, _ = outcome_of(fired, RULES, p, RULES.review_score / threshold)
        room = model_headroom(fired, RULES)
        assert (outcome != "allow") == (p / threshold >= room), (fired, p, threshold, room)


def test_the_threshold_counts_what_the_rules_stop_against_the_budget() -> None:
    y = np.zeros(10, dtype=np.int64)
    p = np.array([0.9, 0.5, 0.45, 0.3, 0.25, 0.2, 0.1, 0.05, 0.02, 0.01])
    # Allowed outright, half-way there, the rules stop it, nothing, nothing, three quarters...
    room = np.array([math.inf, 0.5, 0.0, 1.0, 1.0, 0.25, 1.0, 1.0, 1.0, 1.0])
    # Alone: two of ten may be stopped, so the threshold sits just above the third (0.45).
    assert models.threshold_for_fpr(y, p, 0.2) == 0.45 + 1e-9
    # Beside the rules: stopped from 0 (allowed), 1.0, inf (the rules), 0.3, 0.25, 0.8, ...:
    # two stops are the rules' and 1.0; the threshold sits just above the third, 0.8.
    assert models.threshold_for_fpr(y, p, 0.2, room) == 0.8 + 1e-9
    # The rules alone stop more than the budget: the model adds as little as it can.
    assert models.threshold_for_fpr(y, p, 0.05, room) == 1.0


def test_no_more_of_the_budget_is_spent_than_buys_recall() -> None:
    y = np.array([0] * 10 + [1, 1])
    legit = [0.9, 0.5, 0.45, 0.3, 0.25, 0.2, 0.1, 0.05, 0.02, 0.01]
    # Every fraudulent event scores far above the budget's threshold (0.05 + 1e-9 at 0.1):
    # the served one is the log midpoint between that and the least sure of them.
    p = np.array([*[v / 10 for v in legit], 0.4, 0.99])
    budget = models.threshold_for_fpr(y, p, 0.1)
    assert budget == 0.05 + 1e-9
    assert models.operating_threshold(y, p, 0.1) == math.sqrt(budget * 0.4)
    # A fraudulent event just above the budget's threshold keeps it almost where it is.
    p[10] = 0.051
    assert models.operating_threshold(y, p, 0.1) == math.sqrt(budget * 0.051)
    p[10] = 0.04  # one below it: the budget threshold does not catch it, the other decides
    assert models.operating_threshold(y, p, 0.1) == math.sqrt(budget * 0.99)


def _dataset(n: int, seed: int) -> training.Dataset:
    rng = np.random.default_rng(seed)
    amount = rng.integers(1, 5000, size=n)
    count = rng.integers(0, 60, size=n)
    noise = rng.normal(size=n)
    risk_score = amount / 1500 + count / 30 + noise * 1.2 - 5
    y = (rng.random(n) < 1 / (1 + np.exp(-risk_score))).astype(np.int64)
    feats = [{"amount": int(a), "c_count_1h": int(c), "device_group_size": float(z)}
             for a, c, z in zip(amount, count, noise, strict=True)]
    return training.Dataset(feats, y, np.arange(n, dtype=np.float64),
                            amount.astype(np.float64), ["allow"] * n)


def _validation(data: training.Dataset, test_share: float) -> training.Dataset:
    cut = int(len(data.labels) * (1 - test_share))
    return training.Dataset(data.features[cut:], data.labels[cut:], data.times[cut:],
                            data.amounts[cut:], data.live_outcomes[cut:])


def test_training_beside_rules_keeps_rules_and_model_within_the_budget() -> None:
    data, fpr_max, share = _dataset(6000, 5), 0.03, 0.25
    text, metrics = training.train(data, rule_set=RULES, test_share=share, fpr_max=fpr_max)
    test = metrics["test"]
    assert metrics["rules_version"] == 1
    served = models.load_text(1, text, MODEL_FEATURES, test["threshold"])
    alone = models.load_text(1, text, MODEL_FEATURES, test["model_alone_threshold"])
    validation = _validation(data, share)
    # What the engine decides with the served threshold, on the slice it was chosen on.
    report = training.report(validation, training.outcomes_for(validation, RULES, served))
    assert report["fpr"] <= fpr_max
    assert report["fpr"] == test["with_rules"]["fpr"]
    # The threshold chosen for the model alone, served beside the same rules, stops more
    # legitimate events than the budget: that is what the calibration is for.
    over = training.report(validation, training.outcomes_for(validation, RULES, alone))
    assert over["fpr"] > fpr_max
    assert test["threshold"] > test["model_alone_threshold"]
    # Without rules the threshold is the model alone's, as before.
    _, plain = training.train(data, test_share=share, fpr_max=fpr_max)
    assert plain["test"]["threshold"] == test["model_alone_threshold"]
    assert "with_rules" not in plain["test"]
