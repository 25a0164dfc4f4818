"""``lianjie risk ...``: train and register a model, backtest, manage rule sets and lists.

Every write runs as one unit of work (``run_now``), so a refused rule set or model changes
nothing and the active version stays.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from lianjie.clock import SystemClock
from lianjie.committer import run_now
from lianjie.db import default_database_url, make_engine
from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk import store, training
from lianjie.risk.features import MODEL_FEATURES


def _engine(args: argparse.Namespace) -> Any:
    return make_engine(args.database or default_database_url())


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


def cmd_train(args: argparse.Namespace) -> int:
    engine = _engine(args)
    with engine.connect() as conn:
        rule_set = training.active_rule_set(conn)
        data = training.from_csv(Path(args.csv)) if args.csv else training.from_decisions(
            conn, since=_when(args.since), until=_when(args.until), labelled_only=True)
    print(f"training on {int((data.labels >= 0).sum())} labelled events "
          f"({int((data.labels == 1).sum())} fraudulent), the latest {args.test_share:.0%} "
          f"held out; threshold for rule set version {rule_set.version} beside the model")
    text, metrics = training.train(data, rule_set=rule_set, test_share=args.test_share,
                                   fpr_max=args.fpr_max)
    _print(metrics)
    if args.output:
        Path(args.output).write_text(text)
    if args.no_register:
        return 0
    version = run_now(engine, lambda c: models.do_register(
        c, SystemClock().now(), text, MODEL_FEATURES, metrics, activate=not args.no_activate))
    print(f"registered model version {version}" + ("" if args.no_activate else " (active)"))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """Register a model file trained elsewhere: refused if it does not load."""
    text = Path(args.file).read_text()
    metrics = {"test": {"threshold": args.threshold}, "source": str(args.file)}
    version = run_now(_engine(args), lambda c: models.do_register(
        c, SystemClock().now(), text, MODEL_FEATURES, metrics))
    print(f"registered model version {version} (active)")
    return 0


def _rules_file(path: str) -> tuple[list[rulesets.Rule], dict[str, Any]]:
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise DomainError(ErrorCode.RISK_RULE_INVALID, 'a rules file is {"rules": [...]}')
    extra = {k: raw[k] for k in ("review_score", "block_score", "note") if k in raw}
    return [rulesets.rule_from_json(r) for r in raw["rules"]], extra


def cmd_backtest(args: argparse.Namespace) -> int:
    engine = _engine(args)
    with engine.connect() as conn:
        versions = store.get_versions(conn)
        if args.rules:
            rules, extra = _rules_file(args.rules)
            candidate = rulesets.RuleSet(-1, tuple(rules),
                                         float(extra.get("review_score",
                                                         rulesets.REVIEW_SCORE_DEFAULT)),
                                         float(extra.get("block_score",
                                                         rulesets.BLOCK_SCORE_DEFAULT)))
        else:
            candidate = rulesets.load_active(conn, versions.rules)
        version = versions.model if args.model_version is None else args.model_version
        model = models.load_active(conn, version)
        data = training.from_decisions(conn, since=_when(args.since), until=_when(args.until))
    _print(training.backtest(data, candidate, model))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    engine = _engine(args)
    if args.action == "show":
        with engine.connect() as conn:
            rs = rulesets.load_active(conn, store.get_versions(conn).rules)
        _print({"version": rs.version, "review_score": rs.review_score,
                "block_score": rs.block_score, "rules": [rulesets.rule_json(r)
                                                         for r in rs.rules]})
    elif args.target is None:
        raise DomainError(ErrorCode.INVALID_REQUEST, f"rules {args.action} needs a target")
    elif args.action == "publish":
        rules, extra = _rules_file(args.target)

        def unit(conn: Connection) -> int:
            return rulesets.do_publish(conn, SystemClock().now(), rules, **extra).version

        print(f"published and activated rule set version {run_now(engine, unit)}")
    else:
        version = int(args.target)
        run_now(engine, lambda c: rulesets.do_activate(c, version))
        print(f"rule set version {version} is active")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    engine = _engine(args)
    if args.action == "add":
        run_now(engine, lambda c: store.do_add_to_list(c, SystemClock().now(), args.list,
                                                        args.value, ttl_s=args.ttl_s,
                                                        reason=args.reason))
    else:
        run_now(engine, lambda c: store.do_remove_from_list(c, args.list, args.value))
    print(f"{args.action}: {args.value} ({args.list} list)")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    risk = sub.add_parser("risk", help="the risk engine: models, backtests, rules, lists")
    rs = risk.add_subparsers(dest="risk_command", required=True)
    t = rs.add_parser("train", help="train a LightGBM model and register it")
    t.add_argument("--csv", help="a labelled CSV: time,payer,payee,amount,label[,kind,"
                   "device_id,client_ip,sp_id,category] (default: labelled decisions)")
    t.add_argument("--since")
    t.add_argument("--until")
    t.add_argument("--test-share", type=float, default=0.25)
    t.add_argument("--fpr-max", type=float, default=0.001,
                   help="legitimate share stopped by the active rules and the model together "
                   "on the validation slice (default 0.1%%)")
    t.add_argument("--output", help="also write the model text here")
    t.add_argument("--no-register", action="store_true")
    t.add_argument("--no-activate", action="store_true")
    t.set_defaults(fn=cmd_train)
    r = rs.add_parser("register", help="register a LightGBM model file")
    r.add_argument("file")
    r.add_argument("--threshold", type=float, default=0.5)
    r.set_defaults(fn=cmd_register)
    b = rs.add_parser("backtest", help="replay logged decisions against a candidate")
    b.add_argument("--since")
    b.add_argument("--until")
    b.add_argument("--rules", help="a candidate rules JSON file (default: the active set)")
    b.add_argument("--model-version", type=int, help="0: no model (default: the active one)")
    b.set_defaults(fn=cmd_backtest)
    ru = rs.add_parser("rules", help="show, publish (a JSON file) or activate (a version)")
    ru.add_argument("action", choices=("show", "publish", "activate"))
    ru.add_argument("target", nargs="?")
    ru.set_defaults(fn=cmd_rules)
    li = rs.add_parser("list", help="add to or remove from the block or allow list")
    li.add_argument("action", choices=("add", "remove"))
    li.add_argument("list", choices=store.LISTS)
    li.add_argument("value")
    li.add_argument("--ttl-s", type=int)
    li.add_argument("--reason")
    li.set_defaults(fn=cmd_list)
