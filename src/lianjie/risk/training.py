"""Datasets for training and backtests: from labelled decisions, or from a labelled CSV.

A logged decision keeps the features it was decided on, so a model trains on exactly what it
will see, and a backtest re-runs candidate rules and models over those features without
replaying money. A lender's own CSV of historical transactions (``time, payer, payee, amount,
label`` and optionally ``kind, device_id, client_ip, sp_id, category``; other columns are
ignored) is replayed in time order through a fresh feature state, the same fold the live
engine runs.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, select

from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import model as models
from lianjie.risk import schema
from lianjie.risk.engine import evaluate, model_headroom, outcome_of
from lianjie.risk.features import MODEL_FEATURES, Event, FeatureState
from lianjie.risk.rules import RuleSet, batch, compile_set, load_active
from lianjie.risk.store import get_versions

DATASET_ROWS_MAX = 5_000_000
CSV_REQUIRED = ("time", "payer", "payee", "amount", "label")
_NO_LISTS = {"actor_blocked": 0, "counterparty_blocked": 0, "device_blocked": 0,
             "ip_blocked": 0, "actor_allowed": 0}


@dataclass
class Dataset:
    features: list[dict[str, Any]]
    labels: np.ndarray[Any, Any]  # 1 fraud, 0 legitimate, -1 unknown
    times: np.ndarray[Any, Any]
    amounts: np.ndarray[Any, Any]
    live_outcomes: list[str]

    def matrix(self, names: tuple[str, ...] = MODEL_FEATURES) -> np.ndarray[Any, Any]:
        return np.array([[float(f.get(n, 0.0)) for n in names] for f in self.features],
                        dtype=np.float64).reshape(len(self.features), len(names))


def from_decisions(conn: Connection, *, since: datetime | None = None,
                   until: datetime | None = None, labelled_only: bool = False,
                   labels: dict[str, int] | None = None) -> Dataset:
    """Logged decisions in ``[since, until)``; ``labels`` (subject id -> label) overrides."""
    t = schema.decisions
    query = select(t.c.subject_id, t.c.features, t.c.label, t.c.created_at, t.c.amount,
                   t.c.outcome).order_by(t.c.seq).limit(DATASET_ROWS_MAX)
    if since is not None:
        query = query.where(t.c.created_at >= since)
    if until is not None:
        query = query.where(t.c.created_at < until)
    feats, ys, times, amounts, outcomes = [], [], [], [], []
    for r in conn.execute(query):
        label = labels.get(r.subject_id, r.label) if labels is not None else r.label
        if labelled_only and label is None:
            continue
        feats.append(orjson.loads(r.features))
        ys.append(-1 if label is None else int(label))
        times.append(r.created_at.timestamp())
        amounts.append(r.amount)
        outcomes.append(r.outcome)
    return Dataset(feats, np.array(ys, dtype=np.int64), np.array(times, dtype=np.float64),
                   np.array(amounts, dtype=np.float64), outcomes)


def from_csv(path: Path) -> Dataset:
    """Replay a labelled CSV file through a fresh feature state, in time order."""
    return from_csv_text(path.read_text())


def from_csv_text(text: str) -> Dataset:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"the CSV lacks columns: {', '.join(missing)}", "csv")
    rows = list(itertools.islice(reader, DATASET_ROWS_MAX))
    parsed = []
    for n, row in enumerate(rows, start=2):
        try:
            when = datetime.fromisoformat(row["time"])
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            parsed.append((when, int(row["amount"]), int(row["label"]), row))
        except ValueError:
            raise DomainError(ErrorCode.INVALID_REQUEST, f"line {n}: bad time, amount or label",
                              "csv") from None
    parsed.sort(key=lambda x: x[0])
    state = FeatureState()
    feats: list[dict[str, Any]] = []
    ys, times, amounts = [], [], []
    for when, amount, label, row in parsed:
        event = Event(row.get("kind") or "payment", f"csv{len(feats)}", row["payer"], amount,
                      "CNY", row["payee"] or None, row.get("sp_id") or None,
                      row.get("device_id") or None, row.get("client_ip") or None,
                      row.get("category") or None)
        feats.append({**state.features(event, when), **_NO_LISTS})
        state.apply(event, when.timestamp())
        ys.append(label)
        times.append(when.timestamp())
        amounts.append(amount)
    return Dataset(feats, np.array(ys, dtype=np.int64), np.array(times, dtype=np.float64),
                   np.array(amounts, dtype=np.float64), ["allow"] * len(feats))


def train(data: Dataset, *, rule_set: RuleSet | None = None, test_share: float = 0.25,
          fpr_max: float = 0.001) -> tuple[str, dict[str, Any]]:
    """Train a model on the labelled events. With ``rule_set`` (the one it will serve beside:
    ``active_rule_set``) its threshold is chosen so that the rules and the model together, as
    the engine combines them, stop at most ``fpr_max`` of the legitimate events of the
    validation slice; the rules' own stops count against that share."""
    keep = data.labels >= 0
    headroom = None
    if rule_set is not None:
        headroom = headroom_for([f for f, k in zip(data.features, keep, strict=True) if k],
                                rule_set)
    metrics: dict[str, Any]
    text, metrics = models.train(data.matrix()[keep], data.labels[keep], data.times[keep],
                                 data.amounts[keep], MODEL_FEATURES, test_share=test_share,
                                 fpr_max=fpr_max, headroom=headroom)
    if rule_set is not None:
        metrics["rules_version"] = rule_set.version
    return text, metrics


def headroom_for(features: list[dict[str, Any]], rule_set: RuleSet) -> np.ndarray[Any, Any]:
    """Per event, what the rules leave the model to add (``engine.model_headroom``)."""
    compiled = batch(compile_set(rule_set))
    return np.array([model_headroom(evaluate(compiled, f)[0], rule_set) for f in features],
                    dtype=np.float64)


def active_rule_set(conn: Connection) -> RuleSet:
    """The rule set the engine serves now: a model trained beside it is calibrated for it."""
    return load_active(conn, get_versions(conn).rules)


# -- backtest ------------------------------------------------------------------------------

def outcomes_for(data: Dataset, rule_set: RuleSet | None, model: models.Model | None
                 ) -> list[str]:
    """What a rule set (None: no rules) and a model (None: none) would have decided."""
    compiled = compile_set(rule_set) if rule_set is not None else ()
    probabilities = model.predict_many(data.matrix(model.features)) if model is not None and \
        data.features else None
    thresholds = rule_set or RuleSet(0, ())
    model_points = thresholds.review_score / model.threshold if model is not None else 0.0
    out = []
    for i, feats in enumerate(data.features):
        fired, _ = evaluate(compiled, feats) if compiled else ([], [])
        p = float(probabilities[i]) if probabilities is not None else None
        out.append(outcome_of(fired, thresholds, p, model_points)[0])
    return out


def report(data: Dataset, outcomes: list[str]) -> dict[str, Any]:
    """Precision, recall, FPR (counting review and block as flagged) and amounts stopped."""
    flagged = np.array([o != "allow" for o in outcomes], dtype=bool)
    blocked = np.array([o == "block" for o in outcomes], dtype=bool)
    known = data.labels >= 0
    fraud, legit = known & (data.labels == 1), known & (data.labels == 0)
    tp, fp = int((flagged & fraud).sum()), int((flagged & legit).sum())
    fraud_amount = float(data.amounts[fraud].sum())
    return {
        "events": len(outcomes), "labelled": int(known.sum()), "fraud": int(fraud.sum()),
        "flagged": int(flagged.sum()), "blocked": int(blocked.sum()),
        "precision": round(tp / max(1, tp + fp), 4),
        "recall": round(tp / max(1, int(fraud.sum())), 4),
        "amount_recall": round(float(data.amounts[flagged & fraud].sum()) / fraud_amount, 4)
        if fraud_amount else 0.0,
        "fpr": round(fp / max(1, int(legit.sum())), 6),
        "amount_blocked": int(data.amounts[blocked].sum()),
        "amount_flagged": int(data.amounts[flagged].sum()),
    }


def backtest(data: Dataset, rule_set: RuleSet | None, model: models.Model | None
             ) -> dict[str, Any]:
    """The candidate beside what the live versions decided on the same events."""
    return {"candidate": report(data, outcomes_for(data, rule_set, model)),
            "live": report(data, data.live_outcomes)}
