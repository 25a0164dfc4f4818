"""Reconciliation of a partner's own record file against the ledger.

A partner institution sends what its books say about its settlement account for a business day
(CSV, camt.053 or MT940, amounts signed as on the statement we sent it). Matching is by
reference (``txf_…``), then amount, then value date; every line lands in exactly one outcome:

- ``matched``: same reference, amount and date;
- ``amount_mismatch`` / ``date_mismatch``: same reference, other amount or date;
- ``missing_in_partner``: on our statement, not in their file;
- ``missing_in_ledger``: in their file, not on our statement;
- ``duplicate``: a reference their file lists more than once (the repeats).

Everything but ``matched`` is a break, open until an operator resolves it with a reason; a
correction of money is a new ledger entry posted with the resolution, never an edit. A file is
identified by its SHA-256: importing the same bytes twice is refused and changes nothing. A
malformed, truncated or wrong-currency file is refused whole (nothing imported).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree
from sqlalchemy import Connection, Row, select

from lianjie import events, ledger
from lianjie.clearing import schema as s
from lianjie.clearing.config import ClearingConfig
from lianjie.clearing.statements import statements_for
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, Leg, Purpose
from lianjie.money import currency as lookup_currency
from lianjie.payments import PartyKind, require_party

FILE_BYTES_MAX = 50 * 1024 * 1024
LINES_MAX = 1_000_000
REASON_LENGTH_MAX = 200
FORMATS = ("csv", "camt053", "mt940")
OUTCOMES = ("matched", "amount_mismatch", "date_mismatch", "missing_in_partner",
            "missing_in_ledger", "duplicate")


@dataclass(frozen=True, slots=True)
class PartnerLine:
    reference: str
    amount: int
    value_date: date | None


def _bad(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_FILE, message, "file")


def _minor(text: str, exponent: int) -> int:
    try:
        value = Decimal(text.strip().replace(",", ".")).scaleb(exponent)
    except InvalidOperation as exc:
        raise _bad(f"not an amount: {text!r}") from exc
    if value != value.to_integral_value():
        raise _bad(f"amount {text!r} has too many decimals")
    return int(value)


def parse_csv(data: bytes, exponent: int) -> tuple[str, list[PartnerLine]]:
    """Our statement layout, or a minimal ``reference,amount,currency,date``."""
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _bad(f"unreadable CSV: {exc}") from exc
    out: list[PartnerLine] = []
    currencies: set[str] = set()
    kinds = [r.get("type") for r in rows if r.get("type") in ("opening_balance",
                                                              "closing_balance")]
    if rows and "type" in rows[0] and (not kinds or kinds[-1] != "closing_balance" or
                                       kinds.count("opening_balance") != len(kinds) // 2):
        raise _bad("every account needs an opening and a closing balance row (truncated?)")
    for n, r in enumerate(rows, 2):
        if None in r or any(v is None for v in r.values()):
            raise _bad(f"line {n} has the wrong number of fields (truncated?)")
        if r.get("type") in ("opening_balance", "closing_balance"):
            currencies.add(r.get("currency") or "")
            continue
        try:
            if "amount" in r:
                amount = _minor(r["amount"], exponent)
            else:
                amount = _minor(r["credit"] or "0", exponent) - _minor(r["debit"] or "0",
                                                                        exponent)
            day = r.get("date") or r.get("business_date")
            out.append(PartnerLine(r["reference"], amount,
                                   date.fromisoformat(day) if day else None))
            currencies.add(r["currency"])
        except (KeyError, ValueError) as exc:
            raise _bad(f"line {n}: {exc}") from exc
    return _one_currency(currencies), out


def _one_currency(found: set[str]) -> str:
    found.discard("")
    if len(found) != 1:
        raise _bad(f"a file holds exactly one currency, found {sorted(found)}")
    return found.pop()


def _local(el: Any) -> str:
    return str(etree.QName(el).localname)


def _child(el: Any, *path: str) -> Any:
    for name in path:
        el = next((c for c in el if isinstance(c.tag, str) and _local(c) == name), None)
        if el is None:
            return None
    return el


def parse_camt053(data: bytes, exponent: int) -> tuple[str, list[PartnerLine]]:
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise _bad(f"not well-formed XML (truncated?): {exc}") from exc
    if "camt.053" not in (etree.QName(root).namespace or ""):
        raise _bad("not a camt.053 document")
    out: list[PartnerLine] = []
    currencies: set[str] = set()
    for ntry in root.iter("{*}Ntry"):
        amt = _child(ntry, "Amt")
        ind = _child(ntry, "CdtDbtInd")
        ref = _child(ntry, "AcctSvcrRef")
        if amt is None or ind is None or ref is None or ind.text not in ("CRDT", "DBIT"):
            raise _bad("an entry lacks its amount, indicator or reference")
        currencies.add(amt.get("Ccy", ""))
        amount = _minor(amt.text or "", exponent) * (1 if ind.text == "CRDT" else -1)
        val = _child(ntry, "ValDt", "Dt")
        try:
            day = date.fromisoformat(val.text) if val is not None and val.text else None
        except ValueError as exc:
            raise _bad(f"bad value date: {exc}") from exc
        out.append(PartnerLine(str(ref.text), amount, day))
    for bal in root.iter("{*}Bal"):
        amt = _child(bal, "Amt")
        if amt is not None:
            currencies.add(amt.get("Ccy", ""))
    return _one_currency(currencies), out


_MT61 = re.compile(r"^:61:(\d{6})(\d{4})?(R?[CD])([A-Z])?(\d+,\d*)N\w{3}([^/\s]*)")
_MT_BAL = re.compile(r"^:6[02][FM]:([CD])(\d{6})([A-Z]{3})(\d+,\d*)$")


def parse_mt940(data: bytes, exponent: int) -> tuple[str, list[PartnerLine]]:
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise _bad(f"not text: {exc}") from exc
    out: list[PartnerLine] = []
    currencies: set[str] = set()
    opened = closed = 0
    for ln in lines:
        if ln.startswith((":60F:", ":60M:", ":62F:", ":62M:")):
            m = _MT_BAL.match(ln)
            if m is None:
                raise _bad(f"bad balance line {ln!r}")
            currencies.add(m.group(3))
            opened += ln.startswith(":60")
            closed += ln.startswith(":62")
        elif ln.startswith(":61:"):
            m = _MT61.match(ln)
            if m is None:
                raise _bad(f"bad statement line {ln!r}")
            sign = -1 if m.group(3).endswith("D") else 1
            out.append(PartnerLine(m.group(6), sign * _minor(m.group(5), exponent),
                                   datetime.strptime(m.group(1), "%y%m%d").date()))
    if opened == 0 or opened != closed:
        raise _bad("every statement needs an opening and a closing balance (truncated?)")
    return _one_currency(currencies), out


def match(ours: dict[str, tuple[int, date]], theirs: list[PartnerLine]
          ) -> list[dict[str, Any]]:
    """Every line in exactly one outcome (see the module docstring)."""
    items: list[dict[str, Any]] = []
    counts = Counter(t.reference for t in theirs)
    seen: set[str] = set()
    for t in theirs:
        if t.reference in seen:
            items.append(_item("duplicate", t.reference, ours.get(t.reference), t))
            continue
        seen.add(t.reference)
        mine = ours.get(t.reference)
        if mine is None:
            outcome = "missing_in_ledger"
        elif mine[0] != t.amount:
            outcome = "amount_mismatch"
        elif t.value_date is not None and t.value_date != mine[1]:
            outcome = "date_mismatch"
        else:
            outcome = "matched"
        items.append(_item(outcome, t.reference, mine, t))
    for ref, mine in ours.items():
        if ref not in counts:
            items.append(_item("missing_in_partner", ref, mine, None))
    return items


def _item(outcome: str, ref: str, mine: tuple[int, date] | None, t: PartnerLine | None
          ) -> dict[str, Any]:
    return {"outcome": outcome, "reference": ref[:64],
            "ours_amount": None if mine is None else mine[0],
            "theirs_amount": None if t is None else t.amount,
            "value_date": (t.value_date if t is not None and t.value_date else
                           (mine[1] if mine else None))}


def do_import(conn: Connection, now: datetime, cfg: ClearingConfig, institution_id: str,
              business_date: date, fmt: str, data: bytes, currency_code: str = "CNY"
              ) -> dict[str, Any]:
    """Import and match one partner file; the whole file or nothing."""
    require_party(conn, institution_id, PartyKind.INSTITUTION, "institution_id")
    if fmt not in FORMATS:
        raise DomainError(ErrorCode.INVALID_REQUEST, f"format must be one of {FORMATS}",
                          "format")
    if not data or len(data) > FILE_BYTES_MAX:
        raise _bad(f"a file is 1 byte to {FILE_BYTES_MAX} bytes")
    digest = hashlib.sha256(data).hexdigest()
    prior = conn.execute(select(s.recon_imports.c.id).where(
        s.recon_imports.c.file_sha256 == digest)).scalar()
    if prior is not None:
        raise DomainError(ErrorCode.DUPLICATE_FILE, f"this file was imported as {prior}",
                          "file")
    exponent = lookup_currency(currency_code).exponent
    parser = {"csv": parse_csv, "camt053": parse_camt053, "mt940": parse_mt940}[fmt]
    file_currency, theirs = parser(data, exponent)
    if len(theirs) > LINES_MAX:
        raise _bad(f"at most {LINES_MAX} lines per file")
    if file_currency != currency_code:
        raise DomainError(ErrorCode.CURRENCY_MISMATCH,
                          f"the file is in {file_currency}, the account in {currency_code}",
                          "currency")
    items = match(_ours(conn, cfg, institution_id, business_date, currency_code), theirs)
    import_id = new_id("rci")
    summary = dict(Counter(i["outcome"] for i in items))
    conn.execute(s.recon_imports.insert().values(
        id=import_id, institution_id=institution_id, business_date=business_date, format=fmt,
        file_sha256=digest, currency=currency_code, line_count=len(theirs),
        summary=json.dumps(summary, sort_keys=True), created_at=now))
    if items:
        conn.execute(s.recon_items.insert(), [
            {**i, "id": new_id("rcb"), "import_id": import_id,
             "status": "matched" if i["outcome"] == "matched" else "open", "resolution": None,
             "correction_entry_id": None, "resolved_at": None} for i in items])
    breaks = sum(n for k, n in summary.items() if k != "matched")
    events.emit(conn, now, "reconciliation.imported", institution_id,
                {"id": import_id, "object": "reconciliation", "breaks": breaks,
                 "business_date": business_date.isoformat()})
    return get_import(conn, import_id)


def _ours(conn: Connection, cfg: ClearingConfig, institution_id: str, day: date, cur: str
          ) -> dict[str, tuple[int, date]]:
    _, sts = statements_for(conn, cfg, institution_id, day)
    out: dict[str, tuple[int, date]] = {}
    for st in sts:
        if st.currency != cur or st.purpose != Purpose.INSTITUTION_SETTLEMENT:
            continue
        for ln in st.lines:
            ref = f"txf_{ln.entry_id}"
            prev = out.get(ref, (0, day))[0]
            out[ref] = (prev + ln.amount, day)
    return out


def _import_json(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {"id": m["id"], "object": "reconciliation", "institution_id": m["institution_id"],
            "business_date": m["business_date"].isoformat(), "format": m["format"],
            "file_sha256": m["file_sha256"], "currency": m["currency"],
            "line_count": m["line_count"], "summary": json.loads(m["summary"]),
            "created_at": m["created_at"].isoformat()}


def _item_json(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {"id": m["id"], "object": "reconciliation_item", "import_id": m["import_id"],
            "outcome": m["outcome"], "reference": m["reference"],
            "ours_amount": m["ours_amount"], "theirs_amount": m["theirs_amount"],
            "value_date": None if m["value_date"] is None else m["value_date"].isoformat(),
            "status": m["status"], "resolution": m["resolution"],
            "correction_entry_id": None if m["correction_entry_id"] is None
            else f"txf_{m['correction_entry_id']}"}


def get_import(conn: Connection, import_id: str) -> dict[str, Any]:
    row = conn.execute(select(s.recon_imports).where(s.recon_imports.c.id == import_id)).first()
    if row is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"no reconciliation {import_id}", "id")
    out = _import_json(row)
    out["items"] = [_item_json(r) for r in conn.execute(
        select(s.recon_items).where(s.recon_items.c.import_id == import_id)
        .order_by(s.recon_items.c.outcome, s.recon_items.c.reference, s.recon_items.c.id))]
    return out


def do_resolve(conn: Connection, now: datetime, item_id: str, reason: str, *,
               correction: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Close a break with a reason; ``correction`` (debit account, credit account, amount) posts
    a new ledger entry with it."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"a reason of 1 to {REASON_LENGTH_MAX} characters is required",
                          "reason")
    t = s.recon_items
    query = select(t).where(t.c.id == item_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise DomainError(ErrorCode.RECON_ITEM_NOT_FOUND, f"no item {item_id}", "id")
    if row.status != "open":
        raise DomainError(ErrorCode.INVALID_STATE_TRANSITION,
                          f"item {item_id} is {row.status}, not open", "id")
    entry_id = None
    if correction is not None:
        debit, credit, amount = correction
        result = ledger.post(conn, now, Entry(key=f"recon:{item_id}", code="recon_correction",
                                              legs=(Leg(debit, credit, amount),), memo=item_id))
        entry_id = result.entry_id
    conn.execute(t.update().where(t.c.id == item_id, t.c.status == "open").values(
        status="resolved", resolution=reason.strip(), correction_entry_id=entry_id,
        resolved_at=now))
    events.emit(conn, now, "reconciliation.resolved", item_id,
                {"id": item_id, "object": "reconciliation_item", "reason": reason.strip()})
    found = conn.execute(select(t).where(t.c.id == item_id)).one()
    return _item_json(found)
