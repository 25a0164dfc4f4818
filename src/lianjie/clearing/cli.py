"""``lianjie`` subcommands of the clearing context.

    lianjie eod [--date D]               run or resume end of day (default: yesterday, local)
    lianjie verify-chain                 recompute the signed log from the database
    lianjie statement OWNER DATE --format csv|camt053|mt940|proofs [--out FILE]
    lianjie reconcile INSTITUTION DATE FILE --format csv|camt053|mt940
    lianjie public-key                   print the platform's Ed25519 public key (PEM)
    lianjie proof ENTRY_ID | receipt ORDER_ID | consistency DATE DATE

Outputs are JSON or the statement's bytes; exit status 1 when verify-chain finds anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from lianjie.clearing import log, receipts, recon, statements
from lianjie.clearing.config import ClearingConfig
from lianjie.clearing.eod import run_end_of_day
from lianjie.clearing.signing import load_signer
from lianjie.clock import SystemClock
from lianjie.committer import run_now
from lianjie.db import default_database_url, make_engine, migrate
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import parse_int_id


def _engine(args: argparse.Namespace) -> Engine:
    engine = make_engine(args.database or default_database_url())
    migrate(engine)
    return engine


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def cmd_eod(args: argparse.Namespace) -> int:
    cfg = ClearingConfig()
    clock = SystemClock()
    day = args.date or cfg.business_date(clock.now()) - timedelta(days=1)
    _print(run_end_of_day(_engine(args), day, clock=clock, cfg=cfg).as_json())
    return 0


def cmd_verify_chain(args: argparse.Namespace) -> int:
    from lianjie.clearing.verify import load_public_key

    engine = _engine(args)
    key = load_public_key(load_signer().public_pem)
    with engine.connect() as conn:
        findings = log.verify_chain(conn, key)
        heads = log.heads(conn)
    for f in findings:
        print(f"TAMPERED {f.code} {f.subject}: {f.detail}")
    if findings:
        print(f"{len(findings)} finding(s) across {len(heads)} signed day(s)")
        return 1
    print(f"log verified: {len(heads)} signed day(s), every entry matches its leaf")
    return 0


def cmd_statement(args: argparse.Namespace) -> int:
    with _engine(args).connect() as conn:
        data = statements.render(conn, ClearingConfig(), args.owner, args.date, args.format,
                                 SystemClock().now())
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    now = SystemClock().now()
    result = run_now(_engine(args), lambda c: recon.do_import(
        c, now, ClearingConfig(), args.institution, args.date, args.format, data,
        args.currency))
    _print(result)
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    sys.stdout.write(load_signer().public_pem.decode())
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    entry_id = parse_int_id("txf", args.entry) or (int(args.entry) if args.entry.isdigit()
                                                  else None)
    if entry_id is None:
        raise DomainError(ErrorCode.ENTRY_NOT_FOUND, f"no entry {args.entry}", "entry")
    with _engine(args).connect() as conn:
        proof = log.inclusion_proof(conn, entry_id)
    if proof is None:
        raise DomainError(ErrorCode.NOT_LOGGED_YET, "the entry is not under a signed head")
    _print(proof)
    return 0


def cmd_receipt(args: argparse.Namespace) -> int:
    from lianjie.payments import require_order

    with _engine(args).connect() as conn:
        _print(receipts.receipt_for(conn, require_order(conn, args.order)))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    with _engine(args).connect() as conn:
        old, new = log.get_head(conn, args.first), log.get_head(conn, args.second)
        if old is None or new is None:
            raise DomainError(ErrorCode.NOT_LOGGED_YET, "both days must be sealed")
        _print(log.consistency_proof(conn, old, new))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    day = date.fromisoformat
    p = sub.add_parser("eod", help="run or resume end of day (settle, seal, clear)")
    p.add_argument("--date", type=day, default=None, help="business date (default: yesterday)")
    p.set_defaults(fn=cmd_eod)
    sub.add_parser("verify-chain", help="recompute the signed Merkle log from the database"
                   ).set_defaults(fn=cmd_verify_chain)
    p = sub.add_parser("statement", help="export a day's statement")
    p.add_argument("owner")
    p.add_argument("date", type=day)
    p.add_argument("--format", choices=statements.FORMATS, default="csv")
    p.add_argument("--out", default=None)
    p.set_defaults(fn=cmd_statement)
    p = sub.add_parser("reconcile", help="import a partner's file and match it")
    p.add_argument("institution")
    p.add_argument("date", type=day)
    p.add_argument("file")
    p.add_argument("--format", choices=recon.FORMATS, required=True)
    p.add_argument("--currency", default="CNY")
    p.set_defaults(fn=cmd_reconcile)
    sub.add_parser("public-key", help="print the platform's signing public key"
                   ).set_defaults(fn=cmd_public_key)
    p = sub.add_parser("proof", help="an entry's inclusion proof")
    p.add_argument("entry")
    p.set_defaults(fn=cmd_proof)
    p = sub.add_parser("receipt", help="a payment's e-receipt")
    p.add_argument("order")
    p.set_defaults(fn=cmd_receipt)
    p = sub.add_parser("consistency", help="a consistency proof between two sealed days")
    p.add_argument("first", type=day)
    p.add_argument("second", type=day)
    p.set_defaults(fn=cmd_consistency)
