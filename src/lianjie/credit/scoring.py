"""Scores, probabilities of default and limits for the 310 decision.

A score is points on the PDO scale: ``score = OFFSET + FACTOR * ln(good:bad odds)`` with
600 points at odds of 50:1 and 20 points to double the odds (``PDO``), so
``pd = 1 / (1 + exp((score - OFFSET) / FACTOR))``.

The active model in the registry (``credit_models``, trained by ``lianjie credit train``) scores
an application: a scorecard is a table of bins per feature with their points, applied here by
lookup so a decision needs no model library. Without a trained model the built-in scorecard
(``BUILTIN``, a few monotone rules on takings, regularity, loyalty, refunds and tenure) is used,
so a fresh deployment can lend from day one; its version is ``builtin-1``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select

from lianjie.credit.schema import models

PDO = 20.0
BASE_SCORE = 600.0
BASE_ODDS = 50.0
FACTOR = PDO / math.log(2)
OFFSET = BASE_SCORE - FACTOR * math.log(BASE_ODDS)
SCORE_MIN, SCORE_MAX = 300, 900
CACHE_TTL_S = 30.0

# feature -> ascending (upper bound, points) steps; a value takes the first step it is below.
BUILTIN: dict[str, list[tuple[float, float]]] = {
    "takings_monthly_avg": [(100_000, -40), (1_000_000, 0), (5_000_000, 25), (math.inf, 40)],
    "active_day_ratio": [(0.3, -50), (0.6, -10), (0.85, 15), (math.inf, 30)],
    "takings_volatility": [(0.2, 25), (0.5, 5), (1.0, -25), (math.inf, -60)],
    "takings_growth": [(-0.3, -45), (-0.1, -15), (0.3, 5), (math.inf, 10)],
    "repeat_payer_ratio": [(0.1, -15), (0.3, 0), (math.inf, 15)],
    "refund_rate": [(0.02, 10), (0.08, -10), (math.inf, -50)],
    "tenure_days": [(90, -20), (365, 0), (math.inf, 15)],
    "risk_flag": [(0.5, 0), (math.inf, -200)],
}
BUILTIN_BASE = 640.0


@dataclass(frozen=True, slots=True)
class Model:
    version: str
    base: float
    bins: dict[str, list[tuple[float, float]]]
    calibration: tuple[float, float] | None = None  # (intercept, slope) of PD on score

    def pd(self, score: float) -> float:
        if self.calibration is None:
            return pd_of(score)
        intercept, slope = self.calibration
        return 1.0 / (1.0 + math.exp(-(intercept + slope * score)))


def pd_of(score: float) -> float:
    return 1.0 / (1.0 + math.exp((score - OFFSET) / FACTOR))


def score_of(pd: float) -> float:
    pd = min(max(pd, 1e-6), 1 - 1e-6)
    return OFFSET + FACTOR * math.log((1 - pd) / pd)


def apply(model: Model, features: dict[str, float]) -> tuple[int, list[tuple[str, float]]]:
    """The score and each feature's points (the lowest first: the reasons of a decline)."""
    contributions = []
    for name, steps in model.bins.items():
        value = features.get(name, 0.0)
        points = next(p for upper, p in steps if value < upper)
        contributions.append((name, points))
    score = model.base + sum(p for _, p in contributions)
    clipped = round(min(max(score, SCORE_MIN), SCORE_MAX))
    return clipped, sorted(contributions, key=lambda c: c[1])


_cache: dict[str, tuple[float, Model]] = {}
_lock = threading.Lock()


def active_model(conn: Connection, now_s: float) -> Model:
    """The registry's active scorecard (cached for ``CACHE_TTL_S``), else the built-in one."""
    with _lock:
        hit = _cache.get(str(conn.engine.url))
    if hit is not None and now_s - hit[0] < CACHE_TTL_S:
        return hit[1]
    row = conn.execute(select(models).where(models.c.active == 1, models.c.kind == "scorecard")
                       .order_by(models.c.version.desc()).limit(1)).first()
    model = Model("builtin-1", BUILTIN_BASE, BUILTIN) if row is None else \
        model_from_payload(f"{row.name}-v{row.version}", orjson.loads(row.payload))
    with _lock:
        _cache[str(conn.engine.url)] = (now_s, model)
    return model


def model_from_payload(version: str, payload: dict[str, Any]) -> Model:
    bins = {name: [(math.inf if u is None else float(u), float(p)) for u, p in steps]
            for name, steps in payload["bins"].items()}
    cal = payload.get("calibration")
    calibration = None if cal is None else (float(cal["intercept"]), float(cal["slope"]))
    return Model(version, float(payload["base"]), bins, calibration)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
