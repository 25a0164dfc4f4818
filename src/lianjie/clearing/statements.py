"""Daily statements per account holder (merchant, institution), and their proofs.

A statement covers one business day: the postings on the holder's accounts of every entry in
the day's segment of the signed log, so each line can be proven against the day's signed head.
One statement per account (a merchant has ``merchant_pending``, where payments land and
refunds, loan repayments and settlements leave, and ``merchant_available``; an institution its
settlement account). Three renderings of the same figures:

CSV, one row per line, UTF-8 with a header (the layout is part of the public contract)::

    account_id,owner_id,business_date,booked_at,reference,type,description,debit,credit,
    balance,currency,entry_key

- each account opens with a ``type=opening_balance`` row and ends with ``closing_balance``;
  ``balance`` carries the figure, ``debit``/``credit`` are empty;
- ``booked_at`` is ISO 8601 in the business time zone; amounts are decimal major units
  (``12.34``); ``debit`` money out of the account, ``credit`` money in; ``balance`` after the line;
- ``reference`` is the ledger entry (``txf_123``): the key to the inclusion proof and the
  reconciliation key; ``type`` the entry code (payment, refund, settlement, payout, topup, ...);
  ``description`` the entry's memo (the order, the settlement).

ISO 20022 camt.053.001.08 (one ``Stmt`` per account, OPBD and CLBD balances, one ``Ntry`` per
line with the reference as ``AcctSvcrRef`` and ``EndToEndId``) and SWIFT MT940 (one message per
account, ``:61:`` lines with the reference as customer reference).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree
from sqlalchemy import Connection, text

from lianjie import ledger
from lianjie.clearing import log
from lianjie.clearing.config import ClearingConfig
from lianjie.clock import from_us
from lianjie.errors import DomainError, ErrorCode
from lianjie.money import currency as lookup_currency

CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
CSV_COLUMNS = ("account_id", "owner_id", "business_date", "booked_at", "reference", "type",
               "description", "debit", "credit", "balance", "currency", "entry_key")
FORMATS = ("csv", "camt053", "mt940", "proofs")


@dataclass(frozen=True, slots=True)
class Line:
    entry_id: int
    leaf_index: int
    booked_at: datetime
    code: str
    memo: str | None
    key: str
    amount: int  # signed: > 0 credit, < 0 debit
    balance_after: int


@dataclass(frozen=True, slots=True)
class AccountStatement:
    account_id: int
    owner_id: str
    purpose: str
    currency: str
    business_date: date
    opening: int
    closing: int
    lines: tuple[Line, ...]

    @property
    def debits(self) -> int:
        return -sum(ln.amount for ln in self.lines if ln.amount < 0)

    @property
    def credits(self) -> int:
        return sum(ln.amount for ln in self.lines if ln.amount > 0)


def statements_for(conn: Connection, cfg: ClearingConfig, owner_id: str,
                   business_date: date) -> tuple[log.Head, list[AccountStatement]]:
    """The owner's statements of a sealed business day, one per account."""
    head = log.get_head(conn, business_date)
    if head is None:
        raise DomainError(ErrorCode.NOT_LOGGED_YET,
                          f"business day {business_date} is not sealed yet", "business_date")
    out = [_statement(conn, cfg, acc, business_date, head) for acc in
           ledger.accounts_of(conn, owner_id)]
    return head, out


def _statement(conn: Connection, cfg: ClearingConfig, acc: ledger.Account, day: date,
               head: log.Head) -> AccountStatement:
    rows = conn.execute(text(
        "SELECT e.id, l.leaf_index, e.created_at, e.code, e.memo, e.key, p.amount, "
        "p.balance_after, p.account_seq FROM ledger_postings p "
        # CROSS JOIN: SQLite walks the account's postings first (PostgreSQL plans as it likes)
        "CROSS JOIN clearing_log_leaves l JOIN ledger_entries e ON e.id = p.entry_id "
        "WHERE l.entry_id = p.entry_id AND p.account_id = :acc "
        "AND l.leaf_index >= :start AND l.leaf_index < :end "
        "ORDER BY p.account_seq"),
        {"start": head.day_start_index, "end": head.tree_size, "acc": acc.id}).all()
    lines = tuple(Line(int(r[0]), int(r[1]), from_us(int(r[2])), r[3], r[4], r[5], int(r[6]),
                       int(r[7])) for r in rows)
    if lines:
        opening = lines[0].balance_after - lines[0].amount
    else:
        opening = ledger.balance_at(conn, acc.id, cfg.day_end(day))
    closing = opening + sum(ln.amount for ln in lines)
    return AccountStatement(acc.id, acc.owner_id, acc.purpose, acc.currency, day, opening,
                            closing, lines)


def _fmt(amount: int, code: str) -> str:
    return f"{Decimal(amount).scaleb(-lookup_currency(code).exponent):f}"


def to_csv(statements: list[AccountStatement], cfg: ClearingConfig) -> str:
    tz = ZoneInfo(cfg.timezone)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for st in statements:
        base = [f"acc_{st.account_id}", st.owner_id, st.business_date.isoformat()]
        w.writerow([*base, "", "", "opening_balance", "", "", "",
                    _fmt(st.opening, st.currency), st.currency, ""])
        for ln in st.lines:
            debit = _fmt(-ln.amount, st.currency) if ln.amount < 0 else ""
            credit = _fmt(ln.amount, st.currency) if ln.amount > 0 else ""
            w.writerow([*base, ln.booked_at.astimezone(tz).isoformat(), f"txf_{ln.entry_id}",
                        ln.code, ln.memo or "", debit, credit,
                        _fmt(ln.balance_after, st.currency), st.currency, ln.key])
        w.writerow([*base, "", "", "closing_balance", "", "", "",
                    _fmt(st.closing, st.currency), st.currency, ""])
    return out.getvalue()


def _sub(parent: Any, tag: str, value: str | None = None, **attrib: str) -> Any:
    el = etree.SubElement(parent, f"{{{CAMT_NS}}}{tag}", attrib)
    if value is not None:
        el.text = value
    return el


def _balance(stmt: Any, kind: str, amount: int, cur: str, day: date) -> None:
    bal = _sub(stmt, "Bal")
    _sub(_sub(_sub(bal, "Tp"), "CdOrPrtry"), "Cd", kind)
    _sub(bal, "Amt", _fmt(abs(amount), cur), Ccy=cur)
    _sub(bal, "CdtDbtInd", "DBIT" if amount < 0 else "CRDT")
    _sub(_sub(bal, "Dt"), "Dt", day.isoformat())


def to_camt053(statements: list[AccountStatement], cfg: ClearingConfig, now: datetime,
               message_id: str) -> bytes:
    tz = ZoneInfo(cfg.timezone)
    doc = etree.Element(f"{{{CAMT_NS}}}Document", nsmap={None: CAMT_NS})
    root = _sub(doc, "BkToCstmrStmt")
    hdr = _sub(root, "GrpHdr")
    _sub(hdr, "MsgId", message_id[:35])
    _sub(hdr, "CreDtTm", now.astimezone(tz).isoformat(timespec="seconds"))
    for n, st in enumerate(statements, 1):
        stmt = _sub(root, "Stmt")
        _sub(stmt, "Id", f"{st.business_date:%Y%m%d}-acc_{st.account_id}"[:35])
        _sub(stmt, "ElctrncSeqNb", str(n))
        _sub(stmt, "CreDtTm", now.astimezone(tz).isoformat(timespec="seconds"))
        acct = _sub(stmt, "Acct")
        _sub(_sub(_sub(acct, "Id"), "Othr"), "Id", f"acc_{st.account_id}")
        _sub(acct, "Ccy", st.currency)
        _sub(_sub(acct, "Ownr"), "Nm", st.owner_id)
        _balance(stmt, "OPBD", st.opening, st.currency, st.business_date)
        _balance(stmt, "CLBD", st.closing, st.currency, st.business_date)
        for ln in st.lines:
            _entry(stmt, ln, st.currency, st.business_date, tz)
    return bytes(etree.tostring(doc, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _entry(stmt: Any, ln: Line, cur: str, day: date, tz: ZoneInfo) -> None:
    ntry = _sub(stmt, "Ntry")
    _sub(ntry, "NtryRef", f"txf_{ln.entry_id}")
    _sub(ntry, "Amt", _fmt(abs(ln.amount), cur), Ccy=cur)
    _sub(ntry, "CdtDbtInd", "DBIT" if ln.amount < 0 else "CRDT")
    _sub(_sub(ntry, "Sts"), "Cd", "BOOK")
    _sub(_sub(ntry, "BookgDt"), "DtTm", ln.booked_at.astimezone(tz).isoformat())
    _sub(_sub(ntry, "ValDt"), "Dt", day.isoformat())
    _sub(ntry, "AcctSvcrRef", f"txf_{ln.entry_id}")
    _sub(_sub(_sub(ntry, "BkTxCd"), "Prtry"), "Cd", ln.code)
    tx = _sub(_sub(ntry, "NtryDtls"), "TxDtls")
    refs = _sub(tx, "Refs")
    _sub(refs, "AcctSvcrRef", f"txf_{ln.entry_id}")
    _sub(refs, "EndToEndId", ln.key[:35])
    _sub(tx, "Amt", _fmt(abs(ln.amount), cur), Ccy=cur)
    if ln.memo:
        _sub(_sub(tx, "RmtInf"), "Ustrd", ln.memo[:140])
    _sub(ntry, "AddtlNtryInf", ln.code)


def _mt_amount(amount: int, cur: str) -> str:
    return _fmt(abs(amount), cur).replace(".", ",")


def _mt_balance(tag: str, amount: int, cur: str, day: date) -> str:
    return f":{tag}:{'D' if amount < 0 else 'C'}{day:%y%m%d}{cur}{_mt_amount(amount, cur)}"


def to_mt940(statements: list[AccountStatement], cfg: ClearingConfig) -> str:
    tz = ZoneInfo(cfg.timezone)
    blocks = []
    for n, st in enumerate(statements, 1):
        out = [f":20:{st.business_date:%y%m%d}A{st.account_id}"[:20],
               f":25:acc_{st.account_id}", f":28C:{n}/1",
               _mt_balance("60F", st.opening, st.currency, st.business_date)]
        for ln in st.lines:
            booked = ln.booked_at.astimezone(tz)
            mark = "D" if ln.amount < 0 else "C"
            out.append(f":61:{st.business_date:%y%m%d}{booked:%m%d}{mark}"
                       f"{_mt_amount(ln.amount, st.currency)}NTRFtxf_{ln.entry_id}"[:80])
            out.append(f":86:{ln.code} {ln.memo or ''}".strip()[:65])
        out.append(_mt_balance("62F", st.closing, st.currency, st.business_date))
        blocks.append("\n".join(out))
    return "\n-\n".join(blocks) + "\n-\n" if blocks else ""


def proofs_for(conn: Connection, head: log.Head, statements: list[AccountStatement]
               ) -> dict[str, Any]:
    """An inclusion proof for every entry on the statements, to the day's signed head."""
    from lianjie.clearing import merkle

    subtree = log.proofs_subtree(conn, (ln.leaf_index for st in statements for ln in st.lines),
                                 head.tree_size)
    proofs = []
    seen: set[int] = set()
    for st in statements:
        for ln in st.lines:
            if ln.entry_id in seen:
                continue
            seen.add(ln.entry_id)
            data = log.canonical_entry(conn, ln.entry_id)
            assert data is not None
            path = merkle.inclusion_path(subtree, ln.leaf_index, head.tree_size)
            proofs.append({"entry": data.decode(), "leaf_index": ln.leaf_index,
                           "audit_path": [p.hex() for p in path]})
    exponents = {st.currency: lookup_currency(st.currency).exponent for st in statements}
    return {"object": "statement_proofs", "business_date": head.business_date.isoformat(),
            "tree_size": head.tree_size, "head": head.as_json(),
            "currency_exponents": exponents, "proofs": proofs}


def render(conn: Connection, cfg: ClearingConfig, owner_id: str, business_date: date,
           fmt: str, now: datetime) -> bytes:
    """One owner's statement of one day in ``fmt`` (csv, camt053, mt940 or proofs JSON)."""
    import json

    if fmt not in FORMATS:
        raise DomainError(ErrorCode.INVALID_REQUEST, f"format must be one of {FORMATS}",
                          "format")
    head, sts = statements_for(conn, cfg, owner_id, business_date)
    if fmt == "csv":
        return to_csv(sts, cfg).encode()
    if fmt == "camt053":
        return to_camt053(sts, cfg, now, f"{owner_id}-{business_date:%Y%m%d}")
    if fmt == "mt940":
        return to_mt940(sts, cfg).encode()
    return json.dumps(proofs_for(conn, head, sts), indent=1).encode()
