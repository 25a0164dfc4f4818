"""Risk engine benchmark: decision quality on a held-out simulated period, and decision latency.

Quality: ``lianjie.sim.fraud`` generates a labelled stream (ordinary traffic and five kinds of
fraud). Every event is decided in shadow mode (so all are logged with their features and
folded into the state, as live traffic would be), on a fresh SQLite file. The first
``--train-days`` days train the LightGBM model once, as ``lianjie risk train`` does beside the
built-in rules; its thresholds are chosen on the latest 20% of those days only (never on the
held-out days): for the model served beside the rules ("both", what the engine does with a
published model: rule points and model points added), and for the same trees alone ("model").
The remaining days are held out. On them it reports, for rules alone, the model alone and
both: recall of fraudulent amount, precision, and the share of legitimate events stopped
(review or block).

Latency: ``decide`` in-process with 38 rules, the model and all features, on the last
``--decisions`` events of the stream (held out, decided for the first time against the state
the replay built): one SQLite transaction per 1,000 decisions (as group commit would), each
logged; timed per call in CPU time (``time.process_time``: the machine is shared, and wall
clock counts the time other processes had the core) and wall clock, and as decisions per CPU
second over the whole loop, commits included.

    .venv/bin/python benchmarks/risk.py [--days 14] [--consumers 3000] [--decisions 5000]

The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lianjie import risk
from lianjie.db import make_engine, migrate
from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk import training
from lianjie.risk.engine import evaluate
from lianjie.risk.features import Event, FeatureState
from lianjie.sim import fraud

BATCH = 1000
EXTRA_RULES = tuple(rulesets.Rule(f"watch_{i}", expr, "score", 1.0) for i, expr in enumerate((
    "i_count_1m >= 30", "m_count_1m >= 200", "d_count_24h >= 200", "c_sum_24h >= 5000000",
    "m_distinct_payers_24h >= 5000", "c_distinct_counterparties_24h >= 50",
    "kind == 'loan_application' && amount >= 10000000", "category == 'other' && amount >= 1000000",
)))


def replay(engine: Any, events: list[tuple[datetime, Event]]) -> float:
    """Decide every event in shadow mode; returns the seconds it took."""
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        with engine.begin() as conn:
            for when, event in events[i:i + BATCH]:
                risk.decide(conn, when, event)
    return time.perf_counter() - started


def train_model(data: training.Dataset, train_mask: np.ndarray[Any, Any], fpr_max: float
                ) -> tuple[models.Model, models.Model, dict[str, Any]]:
    """Train once, as ``lianjie risk train`` does beside the built-in rules: the model served
    with them (its threshold chosen on the validation slice for rules and model together) and
    the same trees with the threshold a deployment without rules would get."""
    train = training.Dataset([f for f, k in zip(data.features, train_mask, strict=True) if k],
                             data.labels[train_mask], data.times[train_mask],
                             data.amounts[train_mask], [])
    text, metrics = training.train(train, rule_set=rulesets.DEFAULT_SET, test_share=0.2,
                                   fpr_max=fpr_max)
    test = metrics["test"]
    alone = models.load_text(1, text, risk.MODEL_FEATURES, test["model_alone_threshold"])
    both = models.load_text(1, text, risk.MODEL_FEATURES, test["threshold"])
    return alone, both, metrics


def quality(data: training.Dataset, train_mask: np.ndarray[Any, Any], kinds: list[str],
            alone: models.Model, both: models.Model, metrics: dict[str, Any]
            ) -> dict[str, Any]:
    test_mask = ~train_mask
    test = training.Dataset([f for f, k in zip(data.features, test_mask, strict=True) if k],
                            data.labels[test_mask], data.times[test_mask],
                            data.amounts[test_mask], [])
    test_kinds = [k for k, m in zip(kinds, test_mask, strict=True) if m]
    out: dict[str, Any] = {"training": metrics}
    for name, rule_set, mdl in (("rules", rulesets.DEFAULT_SET, None),
                                ("model", rulesets.RuleSet(0, ()), alone),
                                ("both", rulesets.DEFAULT_SET, both)):
        outcomes = training.outcomes_for(test, rule_set, mdl)
        report = training.report(test, outcomes)
        report["amount_recall_by_kind"] = _by_kind(test, outcomes, test_kinds)
        out[name] = report
    return out


def _by_kind(data: training.Dataset, outcomes: list[str], kinds: list[str]
             ) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for amount, outcome, kind in zip(data.amounts, outcomes, kinds, strict=True):
        if kind:
            t = totals.setdefault(kind, [0.0, 0.0])
            t[0] += amount
            t[1] += amount if outcome != "allow" else 0.0
    return {k: round(stopped / total, 4) for k, (total, stopped) in sorted(totals.items())}


def latency(engine: Any, events: list[tuple[datetime, Event]], model: models.Model,
            metrics: dict[str, Any]) -> dict[str, Any]:
    """``decide`` with the database: its log row written, committed every ``BATCH`` decisions
    (as group commit would, on a WAL file synced at each commit). Per-call times are CPU time
    of this process (``time.process_time``), beside wall clock; the throughput in CPU seconds
    counts the whole loop, the commits included."""
    with engine.begin() as conn:
        rules = [*rulesets.DEFAULT_RULES, *EXTRA_RULES]
        rulesets.do_publish(conn, events[0][0], rules)
        version = models.do_register(conn, events[0][0],
                                     str(model.booster.model_to_string()),
                                     model.features, metrics)
    risk.configure(engine, risk.RiskConfig(shadow=True))  # time the whole path, never raise
    sample = events
    timings: list[float] = []
    cpu: list[float] = []
    explained = 0  # decisions not simply allowed, with SHAP reasons (their extra cost)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(0, len(sample), BATCH):
        with engine.begin() as conn:
            for when, event in sample[i:i + BATCH]:
                t0, c0 = time.perf_counter(), time.process_time()
                decision = risk.decide(conn, when, event)
                cpu.append(time.process_time() - c0)
                timings.append(time.perf_counter() - t0)
                explained += bool(decision.reasons)
            assert decision.rules_version > 0 and decision.model_version == version
    wall, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    return {"decisions": len(timings), "rules": len(rules), "with_reasons": explained,
            **_percentiles("", timings),
            **_percentiles("cpu_", cpu),
            "decisions_per_s": round(len(timings) / sum(timings)),
            "decisions_per_s_with_commits": round(len(timings) / wall),
            "decisions_per_cpu_s": round(len(cpu) / sum(cpu)),
            "decisions_per_cpu_s_with_commits": round(len(cpu) / cpu_total)}


def compute_only(stream: fraud.Stream, model: models.Model, n: int) -> dict[str, Any]:
    """The same decisions without the database: features, 38 rules and the model, timed."""
    state = FeatureState()
    for when, event in stream.events[:-n]:
        state.apply(event, when.timestamp())
    compiled = rulesets.batch(rulesets.compile_set(rulesets.RuleSet(
        0, (*rulesets.DEFAULT_RULES, *EXTRA_RULES))))
    no_lists = {"actor_blocked": 0, "counterparty_blocked": 0, "device_blocked": 0,
                "ip_blocked": 0, "actor_allowed": 0}
    timings, cpu = [], []
    for when, event in stream.events[-n:]:
        t0, c0 = time.perf_counter(), time.process_time()
        feats = state.features(event, when)
        feats.update(no_lists)
        evaluate(compiled, feats)
        model.score(feats)
        state.apply(event, when.timestamp())
        cpu.append(time.process_time() - c0)
        timings.append(time.perf_counter() - t0)
    return {**_percentiles("compute_", timings), **_percentiles("compute_cpu_", cpu),
            "compute_decisions_per_s": round(len(timings) / sum(timings)),
            "compute_decisions_per_cpu_s": round(len(cpu) / sum(cpu))}


def _percentiles(prefix: str, values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max in ms. Wall-clock figures include the time the scheduler gave
    this process's core to other work on the shared machine; ``cpu_`` ones (process CPU time)
    do not."""
    ordered = sorted(values)
    return {f"{prefix}p{q}_ms": round(ordered[min(len(ordered) - 1, len(ordered) * q // 100)]
                                      * 1000, 3) for q in (50, 95, 99)} | \
        {f"{prefix}max_ms": round(ordered[-1] * 1000, 3)}


def cel_comparison() -> dict[str, float]:
    """One rule evaluation, CEL in Rust (the one used) against pure-Python cel-python."""
    import cel

    feats = {"amount": 2000, "c_count_1m": 5, "new_device": 1}
    expr = "new_device == 1 && amount >= 1000 && c_count_1m >= 3"
    program, context = cel.compile(expr), cel.Context(feats)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        program.execute(context)
    out = {"cel_rust_us": round((time.perf_counter() - t0) / n * 1e6, 2)}
    try:
        import celpy  # type: ignore[import-not-found]
    except ImportError:
        return out
    env = celpy.Environment()
    prg = env.program(env.compile(expr))
    act = {k: celpy.celtypes.IntType(v) for k, v in feats.items()}
    t0 = time.perf_counter()
    for _ in range(2000):
        prg.evaluate(act)
    out["cel_python_us"] = round((time.perf_counter() - t0) / 2000 * 1e6, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--train-days", type=int, default=10)
    ap.add_argument("--consumers", type=int, default=3000)
    ap.add_argument("--frauds-per-day", type=int, default=6)
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fpr-max", type=float, default=0.0005,
                    help="legitimate share above the model's threshold on the validation "
                    "slice (half the 0.1%% target: a margin for the held-out days)")
    args = ap.parse_args()
    stream = fraud.generate(days=args.days, consumers=args.consumers,
                            frauds_per_day=args.frauds_per_day, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'risk.sqlite3'}")
        migrate(engine)
        risk.configure(engine, risk.RiskConfig(shadow=True))
        # The last ``--decisions`` events (in the held-out days) are the timed ones: decided
        # for the first time, with the 38 rules and the model trained on the first days, and
        # logged like the others for the quality figures.
        timed = args.decisions
        replay_s = replay(engine, stream.events[:-timed])
        print(f"decided {len(stream.events) - timed} events in {replay_s:.1f} s")
        labels = {sid: 1 for sid in stream.labels}
        cut = stream.events[0][0].timestamp() + args.train_days * 86_400
        assert stream.events[-timed][0].timestamp() >= cut, "timed events must be held out"
        with engine.connect() as conn:
            data = training.from_decisions(conn, labels=labels)
        data.labels[data.labels < 0] = 0
        alone, model, metrics = train_model(data, data.times < cut, args.fpr_max)
        lat = latency(engine, stream.events[-timed:], model, metrics)
        risk.configure(engine, risk.RiskConfig(shadow=True))
        with engine.connect() as conn:
            data = training.from_decisions(conn, labels=labels)
        data.labels[data.labels < 0] = 0
        engine.dispose()
    kinds = [stream.labels.get(e.subject_id, "") for _, e in stream.events]
    print(f"{len(stream.events)} events ({len(stream.labels)} fraudulent)")
    q = quality(data, data.times < cut, kinds, alone, model, metrics)
    for name in ("rules", "model", "both"):
        r = q[name]
        print(f"{name:>5}: amount recall {r['amount_recall']:.3f}  recall "
              f"{r['recall']:.3f}  precision {r['precision']:.3f}  legit stopped "
              f"{r['fpr'] * 100:.3f}%  by kind {r['amount_recall_by_kind']}")
    print(f"latency: p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms  (CPU: p50 "
          f"{lat['cpu_p50_ms']} ms, p99 {lat['cpu_p99_ms']} ms)  {lat['decisions_per_s']} "
          f"decisions/s on one core ({lat['rules']} rules + model); "
          f"{lat['decisions_per_cpu_s_with_commits']} per CPU second with the log committed; "
          f"{lat['with_reasons']} with SHAP reasons")
    compute = compute_only(stream, model, args.decisions)
    print(f"without the database: p50 {compute['compute_p50_ms']} ms  p99 "
          f"{compute['compute_p99_ms']} ms  (CPU p99 {compute['compute_cpu_p99_ms']} ms)  "
          f"{compute['compute_decisions_per_cpu_s']} decisions per CPU second")
    cel_speed = cel_comparison()
    print(f"one CEL rule: {cel_speed}")
    print(json.dumps({
        "events": len(stream.events), "fraud_events": len(stream.labels),
        "held_out_days": args.days - args.train_days,
        **{f"{n}_amount_recall": q[n]["amount_recall"] for n in ("rules", "model", "both")},
        **{f"{n}_legit_stopped_pct": round(q[n]["fpr"] * 100, 4)
           for n in ("rules", "model", "both")},
        "model_threshold_alone": round(alone.threshold, 6),
        "model_threshold_with_rules": round(model.threshold, 6),
        "model_auc": q["training"]["auc"], **lat, **compute, **cel_speed}))


if __name__ == "__main__":
    main()
