"""Training: an optbinning WoE scorecard and a LightGBM challenger on any labelled table.

``train(frame, target)`` takes a target column (1 = default) and numeric feature columns:

- Scorecard: optbinning's ``BinningProcess`` (optimal binning with monotonic trends per
  feature, ``auto_asc_desc``) keeps the features whose information value is at least
  ``IV_MIN``; a logistic regression on their WoE; points scaled with PDO (600 points at odds of
  50:1, 20 points to double them). The probability of default is calibrated by a logistic
  fit of the outcome on the score (Platt scaling), out of fold.
- Challenger: LightGBM on the raw features.
- Both are cross-validated (stratified ``FOLDS``-fold): AUC and KS are reported per model.

The result is registered in ``credit_models`` with the next version: the scorecard as a table
of bins and points (applied by ``scoring`` without any model library) and the calibration,
the challenger as LightGBM's text model, and the out-of-fold scores for the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Connection, func, select, update

from lianjie.credit.schema import models
from lianjie.credit.scoring import BASE_ODDS, BASE_SCORE, PDO

FOLDS = 5
IV_MIN = 0.02
MAX_BINS = 8
SEED = 7
REPORT_ROWS_MAX = 20_000
ROWS_MIN = 100


@dataclass
class Trained:
    features: list[str]
    selected: list[str]
    iv: dict[str, float]
    payload: dict[str, Any]
    challenger: str
    metrics: dict[str, Any]


def ks(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score distributions of bads and goods."""
    order = np.argsort(score)
    ys = y[order]
    bad = np.cumsum(ys) / max(ys.sum(), 1)
    good = np.cumsum(1 - ys) / max((1 - ys).sum(), 1)
    return float(np.max(np.abs(bad - good)))


def _scorecard(features: list[str]) -> Any:
    from optbinning import BinningProcess, Scorecard
    from sklearn.linear_model import LogisticRegression

    fit_params = {f: {"monotonic_trend": "auto_asc_desc", "max_n_bins": MAX_BINS}
                  for f in features}
    process = BinningProcess(variable_names=features, binning_fit_params=fit_params,
                             selection_criteria={"iv": {"min": IV_MIN}})
    return Scorecard(binning_process=process, estimator=LogisticRegression(max_iter=1000),
                     scaling_method="pdo_odds",
                     scaling_method_params={"pdo": PDO, "odds": BASE_ODDS,
                                            "scorecard_points": BASE_SCORE})


def _challenger() -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15,
                          min_child_samples=20, subsample=0.8, subsample_freq=1,
                          colsample_bytree=0.8, random_state=SEED, verbose=-1)


def train(frame: pd.DataFrame, target: str, features: list[str] | None = None,
          folds_count: int = FOLDS) -> Trained:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    warnings.filterwarnings("ignore")
    if target not in frame.columns:
        raise ValueError(f"no target column {target!r}")
    names = features or [c for c in frame.columns if c != target and
                         pd.api.types.is_numeric_dtype(frame[c])]
    y = frame[target].astype(int).to_numpy()
    if len(y) < ROWS_MIN or y.min() == y.max():
        raise ValueError(f"need at least {ROWS_MIN} rows with both outcomes")
    x = frame[names].astype(float)
    oof_score, oof_gbm = np.zeros(len(y)), np.zeros(len(y))
    folds = StratifiedKFold(n_splits=folds_count, shuffle=True, random_state=SEED)
    for fit_idx, test_idx in folds.split(x, y):
        card = _scorecard(names).fit(x.iloc[fit_idx], y[fit_idx])
        oof_score[test_idx] = card.score(x.iloc[test_idx])
        gbm = _challenger().fit(x.iloc[fit_idx], y[fit_idx])
        oof_gbm[test_idx] = gbm.predict_proba(x.iloc[test_idx])[:, 1]
    calib = LogisticRegression().fit(oof_score.reshape(-1, 1), y)
    oof_pd = calib.predict_proba(oof_score.reshape(-1, 1))[:, 1]
    card = _scorecard(names).fit(x, y)
    gbm = _challenger().fit(x, y)
    process = card.binning_process_
    selected = [str(n) for n in process.get_support(names=True)]
    iv = {str(n): float(process.get_binned_variable(n).binning_table.iv) for n in names}
    metrics = {
        "rows": len(y), "bad_rate": float(y.mean()), "folds": folds_count,
        "scorecard": {"auc": float(roc_auc_score(y, -oof_score)), "ks": ks(y, -oof_score)},
        "lightgbm": {"auc": float(roc_auc_score(y, oof_gbm)), "ks": ks(y, oof_gbm)},
        "calibrated_pd": {"auc": float(roc_auc_score(y, oof_pd)),
                          "brier": float(np.mean((oof_pd - y) ** 2))},
        "iv": iv, "selected": selected,
    }
    keep = np.random.default_rng(SEED).permutation(len(y))[:REPORT_ROWS_MAX]
    metrics["oof"] = {"score": [round(float(s), 2) for s in oof_score[keep]],
                      "pd": [round(float(p), 5) for p in oof_pd[keep]],
                      "gbm": [round(float(p), 5) for p in oof_gbm[keep]],
                      "target": [int(t) for t in y[keep]]}
    payload = _payload(card, selected, calib)
    return Trained(names, selected, iv, payload, gbm.booster_.model_to_string(), metrics)


def _payload(card: Any, selected: list[str], calib: Any) -> dict[str, Any]:
    """The scorecard as steps of (upper bound, points) per feature, and the calibration."""
    table = card.table(style="summary")
    bins: dict[str, list[list[float | None]]] = {}
    for name in selected:
        rows = table[table["Variable"] == name]
        points = [float(p) for b, p in zip(rows["Bin"], rows["Points"], strict=True)
                  if b not in ("Special", "Missing")]
        splits = [float(s) for s in card.binning_process_.get_binned_variable(name).splits]
        uppers: list[float | None] = [*splits, None]
        assert len(uppers) == len(points), (name, uppers, points)
        bins[name] = [[u, p] for u, p in zip(uppers, points, strict=True)]
    return {"base": 0.0, "bins": bins,
            "calibration": {"intercept": float(calib.intercept_[0]),
                            "slope": float(calib.coef_[0][0])}}


def register(conn: Connection, now: datetime, trained: Trained, name: str = "merchant310",
             *, activate: bool = True) -> int:
    """Store the scorecard (active) and the challenger (inactive) as the next versions."""
    top = conn.execute(select(func.max(models.c.version))).scalar() or 0
    if activate:
        conn.execute(update(models).where(models.c.kind == "scorecard").values(active=0))
    metrics = orjson.dumps(trained.metrics).decode()
    conn.execute(models.insert(), [
        {"version": top + 1, "kind": "scorecard", "name": name, "active": int(activate),
         "metrics": metrics, "payload": orjson.dumps(trained.payload).decode(),
         "created_at": now},
        {"version": top + 2, "kind": "lightgbm", "name": name + "-challenger", "active": 0,
         "metrics": orjson.dumps({k: v for k, v in trained.metrics.items() if k != "oof"}
                                 ).decode(), "payload": trained.challenger, "created_at": now},
    ])
    return int(top + 1)


def summary(trained: Trained) -> str:
    m = trained.metrics
    lines = [f"rows {m['rows']}, bad rate {m['bad_rate']:.3f}, {m['folds']}-fold "
             "cross-validation",
             f"scorecard  AUC {m['scorecard']['auc']:.3f}  KS {m['scorecard']['ks']:.3f}",
             f"lightgbm   AUC {m['lightgbm']['auc']:.3f}  KS {m['lightgbm']['ks']:.3f}",
             f"calibrated PD Brier {m['calibrated_pd']['brier']:.4f}",
             f"selected by IV >= {IV_MIN:.2f}: " + ", ".join(
                 f"{n} ({trained.iv[n]:.2f})" for n in trained.selected)]
    return "\n".join(lines)
