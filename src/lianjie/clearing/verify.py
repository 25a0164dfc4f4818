"""The stand-alone verifier: a partner checks its statement, proofs and e-receipts offline.

Needs only the standard library, ``cryptography`` and ``merkle.py`` beside it, plus the
platform's public key (obtained once, out of band). No database, no network::

    lianjie-verify --public-key platform.pem proofs.json [--statement statement.csv]
    lianjie-verify --public-key platform.pem receipt.json
    lianjie-verify --public-key platform.pem consistency.json
    python -m lianjie.clearing.verify ...            (the same)

It checks the signed tree head's Ed25519 signature, every inclusion proof against the signed
root, that each entry hashes to its leaf, and, with ``--statement``, that every CSV line (its
reference, account and amount) is a posting of a proven entry and every proven posting on the
statement's accounts is on the statement. Exit 0: all verified; 1: a check failed (the reason
is printed with a stable code); 2: unreadable input.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

try:
    from lianjie.clearing import merkle
except ImportError:  # copied out of the package: merkle.py sits beside this file
    import merkle  # type: ignore[import-not-found,no-redef]


class VerifyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise VerifyError("invalid_public_key", str(exc)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerifyError("invalid_public_key", "not an Ed25519 public key")
    return key


def check_head(head: dict[str, Any], key: Ed25519PublicKey) -> dict[str, Any]:
    """The signed body of a tree head whose signature verifies."""
    try:
        body_text, signature = str(head["body"]), bytes.fromhex(head["signature"])
        key.verify(signature, body_text.encode())
        body = json.loads(body_text)
        bytes.fromhex(body["root_hash"])
        int(body["tree_size"])
    except InvalidSignature as exc:
        raise VerifyError("invalid_signature", "the tree head's signature does not verify"
                          ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise VerifyError("malformed", f"tree head: {exc}") from exc
    return dict(body)


def check_inclusion(item: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The entry an inclusion proof proves, parsed; raises unless it is in the signed tree."""
    try:
        data = str(item["entry"]).encode()
        index = int(item["leaf_index"])
        path = [bytes.fromhex(p) for p in item["audit_path"]]
        entry = json.loads(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise VerifyError("malformed", f"inclusion proof: {exc}") from exc
    if not merkle.verify_inclusion(merkle.leaf_hash(data), index, int(body["tree_size"]), path,
                                   bytes.fromhex(body["root_hash"])):
        raise VerifyError("invalid_proof", f"entry at leaf {index} is not in the signed tree")
    return dict(entry)


def verify_statement(bundle: dict[str, Any], key: Ed25519PublicKey,
                     statement_csv: str | None = None) -> dict[str, Any]:
    body = check_head(bundle.get("head") or {}, key)
    if body.get("business_date") != bundle.get("business_date"):
        raise VerifyError("invalid_proof", "the proofs are for another day's head")
    proven: dict[int, dict[str, Any]] = {}
    for item in bundle.get("proofs", []):
        entry = check_inclusion(item, body)
        start = int(body.get("day_start_index", 0))
        if not start <= int(item["leaf_index"]) < int(body["tree_size"]):
            raise VerifyError("invalid_proof", "an entry outside the statement's day")
        proven[int(entry["id"])] = entry
    lines = 0
    if statement_csv is not None:
        lines = _check_csv(statement_csv, proven, bundle.get("currency_exponents", {}))
    return {"ok": True, "business_date": body["business_date"], "entries": len(proven),
            "lines": lines, "root_hash": body["root_hash"], "tree_size": body["tree_size"]}


def _minor(text: str, exponent: int) -> int:
    value = Decimal(text).scaleb(exponent)
    if value != value.to_integral_value():
        raise VerifyError("malformed", f"amount {text} has too many decimals")
    return int(value)


def _check_csv(text: str, proven: dict[int, dict[str, Any]], exponents: dict[str, int]) -> int:
    postings = {(eid, p[2]): p[4] for eid, e in proven.items() for p in e["postings"]}
    accounts: set[int] = set()
    seen: set[tuple[int, int]] = set()
    count = 0
    try:
        for row in csv.DictReader(io.StringIO(text)):
            account = int(row["account_id"].removeprefix("acc_"))
            accounts.add(account)
            if row["type"] in ("opening_balance", "closing_balance"):
                continue
            eid = int(row["reference"].removeprefix("txf_"))
            exp = int(exponents.get(row["currency"], 2))
            amount = _minor(row["credit"] or "0", exp) - _minor(row["debit"] or "0", exp)
            if postings.get((eid, account)) != amount:
                raise VerifyError("line_mismatch", f"line {row['reference']} on acc_{account}: "
                                  "no proven posting of that amount")
            seen.add((eid, account))
            count += 1
    except (KeyError, ValueError, InvalidOperation, csv.Error) as exc:
        raise VerifyError("malformed", f"statement: {exc}") from exc
    missing = [k for k in postings if k[1] in accounts and k not in seen]
    if missing:
        raise VerifyError("line_missing", f"proven posting txf_{missing[0][0]} is not on the "
                          "statement")
    return count


def verify_receipt(receipt: dict[str, Any], key: Ed25519PublicKey) -> dict[str, Any]:
    proof = receipt.get("proof") or {}
    body = check_head(proof.get("head") or {}, key)
    entry = check_inclusion(proof, body)
    payment = receipt.get("payment") or {}
    if entry.get("key") != f"pay:{payment.get('id')}" or not any(
            p[4] == payment.get("amount") for p in entry["postings"]):
        raise VerifyError("receipt_mismatch", "the receipt does not match the proven entry")
    return {"ok": True, "payment": payment.get("id"), "entry": entry["id"],
            "business_date": body["business_date"], "root_hash": body["root_hash"]}


def verify_consistency(doc: dict[str, Any], key: Ed25519PublicKey) -> dict[str, Any]:
    old = check_head(doc.get("old_head") or {}, key)
    new = check_head(doc.get("new_head") or {}, key)
    try:
        path = [bytes.fromhex(p) for p in doc["path"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerifyError("malformed", f"consistency proof: {exc}") from exc
    ok = merkle.verify_consistency(int(old["tree_size"]), int(new["tree_size"]),
                                   bytes.fromhex(old["root_hash"]),
                                   bytes.fromhex(new["root_hash"]), path) \
        if int(old["tree_size"]) else True
    if not ok:
        raise VerifyError("invalid_proof", "the later tree does not extend the earlier one")
    return {"ok": True, "old": old["business_date"], "new": new["business_date"]}


def verify_document(doc: dict[str, Any], key: Ed25519PublicKey,
                    statement_csv: str | None = None) -> dict[str, Any]:
    kind = doc.get("object") if isinstance(doc, dict) else None
    if kind == "statement_proofs":
        return verify_statement(doc, key, statement_csv)
    if kind == "e_receipt":
        return verify_receipt(doc, key)
    if kind == "consistency_proof":
        return verify_consistency(doc, key)
    raise VerifyError("malformed", f"unknown document {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lianjie-verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--public-key", required=True, type=Path)
    parser.add_argument("--statement", type=Path, default=None)
    parser.add_argument("document", type=Path)
    args = parser.parse_args(argv)
    try:
        key = load_public_key(args.public_key.read_bytes())
        doc = json.loads(args.document.read_text())
        statement = args.statement.read_text() if args.statement else None
        result = verify_document(doc, key, statement)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"lianjie-verify: malformed: {exc}", file=sys.stderr)
        return 2
    except VerifyError as exc:
        print(f"FAILED {exc}")
        return 1
    print("VERIFIED " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
