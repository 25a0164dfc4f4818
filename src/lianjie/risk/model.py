"""The model: a LightGBM gradient-boosted classifier over ``MODEL_FEATURES``, served in-process.

A model is stored in ``risk_models`` as LightGBM's text format with the list of features it was
trained on, and is registered only if it loads and its features are all ones this code computes
(``risk_model_invalid`` otherwise: the active version stays). One event is scored through
LightGBM's single-row fast path, prepared once per model; the reasons are each feature's SHAP
contribution (``pred_contrib``), asked only for events that are not simply allowed.

Training splits by time (the latest ``test_share`` of events is the test set), never at random:
a random split leaks tomorrow's fraud rings into today's training data.
"""

from __future__ import annotations

import ctypes
import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, func, select

from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import schema
from lianjie.risk.features import MODEL_FEATURES

REASONS_MAX = 3
TRAIN_ROUNDS = 120
MODEL_TEXT_MAX = 50_000_000
THRESHOLD_MIN = 1e-6


@dataclass
class Model:
    version: int
    features: tuple[str, ...]
    booster: Any  # lightgbm.Booster
    # The probability at which the model alone sends an event to review: chosen at training
    # so that at most ``fpr_max`` of the legitimate events in the validation slice reach it.
    threshold: float = 0.5
    _fast: _FastRow | None = field(default=None, init=False, repr=False, compare=False)

    def _fast_row(self) -> _FastRow:
        fast = self._fast
        if fast is None:
            fast = self._fast = _FastRow(self.booster, len(self.features))
        return fast

    def score(self, feats: dict[str, Any]) -> float:
        """The fraud probability of one event, through LightGBM's single-row fast path (see
        ``_FastRow``): the same trees and the same result as ``Booster.predict``."""
        return self._fast_row().predict([feats[name] for name in self.features])

    def reasons(self, feats: dict[str, Any]) -> list[tuple[str, float]]:
        """The features that pushed the score up most: their SHAP contributions
        (``pred_contrib``). Several times the cost of ``score``, so the engine asks only
        for events it does not simply allow."""
        contrib = self._fast_row().contributions([feats[name] for name in self.features])
        top = np.argsort(contrib[:-1])[::-1][:REASONS_MAX]
        return [(self.features[i], round(float(contrib[i]), 4)) for i in top if contrib[i] > 0]

    def predict_many(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = self.booster.predict(matrix, num_threads=1)
        return out


class _FastRow:
    """LightGBM's own single-row prediction (``LGBM_BoosterPredictForMatSingleRowFast`` in its
    C API, which the Python ``Booster`` does not wrap): the prediction setup is made once per
    model and kept, where ``Booster.predict`` builds a predictor, copies its parameters and
    converts a numpy matrix on every call (about 80% of the cost of one row). The input and
    output buffers are this object's own, so calls are serialised by a lock."""

    def __init__(self, booster: Any, ncol: int) -> None:
        from lightgbm.basic import _LIB, _safe_call  # type: ignore[attr-defined]

        self._lib, self._check = _LIB, _safe_call
        self.row = np.zeros(ncol, dtype=np.float64)
        self.out = np.zeros(ncol + 1, dtype=np.float64)
        self.out_len = ctypes.c_int64(0)
        self._row_p = self.row.ctypes.data_as(ctypes.c_void_p)
        self._out_p = self.out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._len_p = ctypes.byref(self.out_len)
        self._lock = threading.Lock()
        self._booster = booster  # keeps the handle the configs point into alive
        # num_iteration -1: all trees, as ``predict`` does for a model loaded from text.
        self._normal = self._config(booster, _PREDICT_NORMAL, ncol)
        self._contrib = self._config(booster, _PREDICT_CONTRIB, ncol)
        weakref.finalize(self, _free_configs, _LIB, (self._normal, self._contrib))

    def _config(self, booster: Any, predict_type: int, ncol: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(ncol),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(handle)))
        return handle

    def _run(self, config: ctypes.c_void_p, values: list[Any]) -> None:
        self.row[:] = values
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(
            config, self._row_p, self._len_p, self._out_p))

    def predict(self, values: list[Any]) -> float:
        with self._lock:
            self._run(self._normal, values)
            return float(self.out[0])

    def contributions(self, values: list[Any]) -> np.ndarray[Any, Any]:
        with self._lock:
            self._run(self._contrib, values)
            return self.out[:self.out_len.value].copy()


_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL
_PREDICT_CONTRIB = 3  # C_API_PREDICT_CONTRIB
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


def _free_configs(lib: Any, configs: tuple[ctypes.c_void_p, ...]) -> None:
    for config in configs:
        lib.LGBM_FastConfigFree(config)


def _invalid(message: str) -> DomainError:
    return DomainError(ErrorCode.RISK_MODEL_INVALID, message, "model")


def load_text(version: int, text: str, features: Sequence[str],
              threshold: float = 0.5) -> Model:
    """Load a model, or refuse it: corrupt text, or features this code does not compute."""
    if not isinstance(text, str) or not text or len(text) > MODEL_TEXT_MAX:
        raise _invalid("the model file is empty or too large")
    unknown = sorted(set(features) - set(MODEL_FEATURES))
    if unknown or not features:
        raise _invalid(f"the model uses unknown features: {', '.join(unknown) or 'none'}")
    import lightgbm as lgb  # here, not at the top: importing it costs every process ~0.3 s

    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise _invalid(f"the model does not load: {str(exc)[:200]}") from None
    if booster.num_feature() != len(features):
        raise _invalid(f"the model takes {booster.num_feature()} features, "
                       f"not the {len(features)} listed")
    if not 0 < threshold <= 1:
        raise _invalid(f"the model's threshold {threshold} is not a probability")
    return Model(version, tuple(features), booster, threshold)


def load_active(conn: Connection, version: int) -> Model | None:
    if version == 0:
        return None
    row = conn.execute(select(schema.models).where(schema.models.c.version == version)).one()
    return load_text(version, row.model, orjson.loads(row.features), _threshold(row.metrics))


def _threshold(metrics_json: str) -> float:
    test = orjson.loads(metrics_json).get("test") or {}
    return float(test.get("threshold", 0.5)) if isinstance(test, dict) else 0.5


def do_register(conn: Connection, now: datetime, text: str, features: Sequence[str],
                metrics: dict[str, Any], *, activate: bool = True) -> int:
    """Store a model as the next version (and activate it) if it loads; returns the version."""
    load_text(0, text, features, _threshold(orjson.dumps(metrics).decode()))
    version = int(conn.execute(select(func.coalesce(func.max(schema.models.c.version), 0))
                               ).scalar_one()) + 1
    conn.execute(schema.models.insert().values(
        version=version, features=orjson.dumps(list(features)).decode(), model=text,
        metrics=orjson.dumps(metrics).decode(), created_at=now))
    if activate:
        from lianjie.risk.store import set_state
        set_state(conn, model_version=version)
    return version


def list_models(conn: Connection) -> list[dict[str, Any]]:
    t = schema.models
    return [{"version": r.version, "metrics": orjson.loads(r.metrics),
             "created_at": r.created_at.isoformat()}
            for r in conn.execute(select(t.c.version, t.c.metrics, t.c.created_at)
                                  .order_by(t.c.version))]


# -- training ------------------------------------------------------------------------------

def stopped_from(p: np.ndarray[Any, Any], headroom: np.ndarray[Any, Any] | None
                 ) -> np.ndarray[Any, Any]:
    """Per event, the highest model threshold at which it is still stopped: its probability
    over what the rules leave the model to add (``engine.model_headroom``; none given: the
    model alone, headroom 1). Infinity when the rules stop it whatever the model says, 0 when
    they allow it outright."""
    if headroom is None:
        return p
    out = np.full(len(p), np.inf)
    np.divide(p, headroom, out=out, where=headroom > 0)
    return out


def metrics_at(y: np.ndarray[Any, Any], p: np.ndarray[Any, Any], amounts: np.ndarray[Any, Any],
               threshold: float, headroom: np.ndarray[Any, Any] | None = None
               ) -> dict[str, float]:
    """Precision, recall (of events and of fraudulent amount) and FPR at one threshold, for
    the model alone or (``headroom``) with the rules beside it."""
    flagged = stopped_from(p, headroom) >= threshold
    fraud = y == 1
    tp = int((flagged & fraud).sum())
    fp = int((flagged & ~fraud).sum())
    fraud_amount = float(amounts[fraud].sum())
    return {
        "threshold": float(threshold),  # unrounded: the engine serves exactly this
        "precision": round(tp / max(1, tp + fp), 4),
        "recall": round(tp / max(1, int(fraud.sum())), 4),
        "amount_recall": round(float(amounts[flagged & fraud].sum()) / fraud_amount, 4)
        if fraud_amount else 0.0,
        "fpr": round(fp / max(1, int((~fraud).sum())), 6),
    }


def threshold_for_fpr(y: np.ndarray[Any, Any], p: np.ndarray[Any, Any], fpr_max: float,
                      headroom: np.ndarray[Any, Any] | None = None) -> float:
    """The lowest threshold that stops at most ``fpr_max`` of the legitimate events: the model
    alone, or (``headroom``) with the rules it will serve beside, whose own stops count
    against the same budget. Not below ``THRESHOLD_MIN``, not above 1: when the rules alone
    stop more than the budget, the model gets the threshold 1 (it adds as little as it can)."""
    legit = np.sort(stopped_from(p, headroom)[y == 0])[::-1]
    allowed = math.floor(fpr_max * len(legit))
    if len(legit) == 0:
        return 0.5
    lowest = float(legit[allowed]) + 1e-9 if allowed < len(legit) else 0.0
    return min(1.0, max(THRESHOLD_MIN, lowest))


def operating_threshold(y: np.ndarray[Any, Any], p: np.ndarray[Any, Any], fpr_max: float,
                        headroom: np.ndarray[Any, Any] | None = None) -> float:
    """The threshold the engine serves: within the budget (``threshold_for_fpr``), but no
    more of it spent than buys recall. The lowest threshold inside the budget sits right on
    the legitimate events' tail; when every fraudulent event of the slice it stops scores well
    above that, the threshold moves up to the midpoint (in log scale) between the two: the same
    fraud stopped on the slice, fewer legitimate events, and room on both sides for the days
    the slice did not see. Where fraud and legitimate scores interleave it stays put."""
    budget = threshold_for_fpr(y, p, fpr_max, headroom)
    stopped = stopped_from(p, headroom)
    caught = stopped[(y == 1) & (stopped >= budget) & np.isfinite(stopped)]
    if len(caught) == 0:
        return budget
    least_sure = float(caught.min())
    return min(1.0, math.sqrt(budget * least_sure)) if least_sure > budget else budget


def train(matrix: np.ndarray[Any, Any], y: np.ndarray[Any, Any], times: np.ndarray[Any, Any],
          amounts: np.ndarray[Any, Any], features: Sequence[str], *, test_share: float = 0.25,
          fpr_max: float = 0.001, seed: int = 7, headroom: np.ndarray[Any, Any] | None = None
          ) -> tuple[str, dict[str, Any]]:
    """Train on the earlier events, test on the latest; the model text and its metrics.

    The threshold (``metrics["test"]["threshold"]``, what the engine serves) is chosen on the
    latest slice for at most ``fpr_max`` legitimate events stopped. With ``headroom`` (per
    event, from the rule set the model will serve beside: ``training.train`` computes it) it
    is chosen for the rules and the model together, as the engine adds their scores; the
    model alone's threshold is kept beside it as ``model_alone_threshold``."""
    import lightgbm as lgb

    assert 0 < test_share < 1 and len(y) == len(matrix) == len(times) == len(amounts)
    assert headroom is None or len(headroom) == len(y)
    if len(y) < 20 or len(set(y.tolist())) < 2:
        raise _invalid("training needs at least 20 events of both labels")
    order = np.argsort(times, kind="stable")
    cut = int(len(order) * (1 - test_share))
    train_i, test_i = order[:cut], order[cut:]
    params = {"objective": "binary", "learning_rate": 0.08, "num_leaves": 31,
              "min_data_in_leaf": 20, "feature_fraction": 0.9, "bagging_fraction": 0.9,
              "bagging_freq": 1, "seed": seed, "verbose": -1, "num_threads": 1,
              "deterministic": True}
    data = lgb.Dataset(matrix[train_i], label=y[train_i], feature_name=list(features),
                       free_raw_data=True)
    booster = lgb.train(params, data, num_boost_round=TRAIN_ROUNDS)
    p_test = np.asarray(booster.predict(matrix[test_i]))
    y_test, amounts_test = y[test_i], amounts[test_i]
    # Chosen on the latest slice, which the trees did not see: on the training slice nearly
    # every legitimate event scores near zero and the threshold would come out far too low.
    alone = operating_threshold(y_test, p_test, fpr_max)
    test: dict[str, Any] = metrics_at(y_test, p_test, amounts_test, alone)
    if headroom is not None:
        room = headroom[test_i]
        both = operating_threshold(y_test, p_test, fpr_max, room)
        test = {**metrics_at(y_test, p_test, amounts_test, both),
                "model_alone_threshold": alone,
                "with_rules": metrics_at(y_test, p_test, amounts_test, both, room)}
    metrics = {"train_events": len(train_i), "test_events": len(test_i),
               "train_fraud": int(y[train_i].sum()), "test_fraud": int(y_test.sum()),
               "auc": round(_auc(y_test, p_test), 4), "test": test}
    return str(booster.model_to_string()), metrics


def _auc(y: np.ndarray[Any, Any], p: np.ndarray[Any, Any]) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) /
                 (len(pos) * len(neg)))
