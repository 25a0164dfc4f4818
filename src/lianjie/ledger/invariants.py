"""Invariants of the ledger, checked against the database.

``verify(conn)`` re-derives everything the ledger caches and returns every violation it finds
(as values, so one run reports them all, as beancount's validations do):

- ``currency_not_zero``: per currency, the balances of all accounts sum to zero.
- ``totals_mismatch``: each account's posted debits and credits equal the fold of its postings,
  and its posting count equals the number of its postings.
- ``sequence_broken``: each posting's running balance equals the fold of the postings before it.
- ``pending_mismatch``: each account's pending counters equal the sum of its pending holds' legs.
- ``limit_violated``: no account breaks its limit flag.
- ``entry_unbalanced``: every posted leg has a debit and a credit side of the same amount.

``check_invariants(conn)`` asserts there are none; tests call it after every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from lianjie.ledger.model import AccountFlags, HoldStatus


@dataclass(frozen=True, slots=True)
class Violation:
    code: str
    subject: str
    detail: str


def verify(conn: Connection) -> list[Violation]:
    found: list[Violation] = []
    found += _currency_sums(conn)
    found += _account_totals(conn)
    found += _running_balances(conn)
    found += _pending(conn)
    found += _limits(conn)
    found += _legs(conn)
    return found


def check_invariants(conn: Connection) -> None:
    problems = verify(conn)
    assert not problems, problems


def _currency_sums(conn: Connection) -> list[Violation]:
    rows = conn.execute(text(
        "SELECT currency, SUM(credits_posted - debits_posted), "
        "SUM(credits_pending - debits_pending) FROM ledger_accounts GROUP BY currency"))
    return [Violation("currency_not_zero", cur, f"posted sum {posted}, pending sum {pending}")
            for cur, posted, pending in rows if posted != 0 or pending != 0]


def _account_totals(conn: Connection) -> list[Violation]:
    rows = conn.execute(text(
        "SELECT a.id, a.debits_posted, a.credits_posted, a.posting_count, "
        "COALESCE(p.debits, 0), COALESCE(p.credits, 0), COALESCE(p.n, 0) "
        "FROM ledger_accounts a LEFT JOIN ("
        "  SELECT account_id, SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END) AS debits,"
        "         SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS credits,"
        "         COUNT(*) AS n, MAX(account_seq) AS top"
        "  FROM ledger_postings GROUP BY account_id) p ON p.account_id = a.id"))
    out = []
    for acct, dp, cp, n, pd, pc, pn in rows:
        if (dp, cp, n) != (pd, pc, pn):
            out.append(Violation("totals_mismatch", f"acc_{acct}",
                                 f"account says debits {dp} credits {cp} postings {n}; "
                                 f"postings give {pd} {pc} {pn}"))
    return out


def _running_balances(conn: Connection) -> list[Violation]:
    rows = conn.execute(text(
        "SELECT account_id, account_seq, balance_after, running FROM ("
        "  SELECT account_id, account_seq, balance_after,"
        "         SUM(amount) OVER (PARTITION BY account_id ORDER BY account_seq"
        "                           ROWS UNBOUNDED PRECEDING) AS running,"
        "         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY account_seq) AS rn"
        "  FROM ledger_postings) q "
        "WHERE running <> balance_after OR rn <> account_seq"))
    return [Violation("sequence_broken", f"acc_{acct}",
                      f"posting {seq}: balance_after {after}, fold gives {running}")
            for acct, seq, after, running in rows]


def _pending(conn: Connection) -> list[Violation]:
    # Each side's pending holds summed per account in one grouped pass (a correlated sum per
    # account scanned every hold leg once per account: minutes with thousands of holds).
    params = {"pending": int(HoldStatus.PENDING)}
    held: dict[int, list[int]] = {}
    for side, column in enumerate(("l.debit_account_id", "l.credit_account_id")):
        for acct, total in conn.execute(text(
                f"SELECT {column}, SUM(l.amount) FROM ledger_hold_legs l JOIN ledger_holds h"
                f" ON h.entry_id = l.entry_id WHERE h.status = :pending GROUP BY {column}"),
                params):
            held.setdefault(acct, [0, 0])[side] = int(total)
    counters = {acct: (dp, cp) for acct, dp, cp in conn.execute(text(
        "SELECT id, debits_pending, credits_pending FROM ledger_accounts"
        " WHERE debits_pending <> 0 OR credits_pending <> 0"))}
    out = []
    for acct in sorted(counters.keys() | held.keys()):
        dp, cp = counters.get(acct, (0, 0))
        hd, hc = held.get(acct, (0, 0))
        if (dp, cp) != (hd, hc):
            out.append(Violation("pending_mismatch", f"acc_{acct}",
                                 f"pending debits {dp} credits {cp}; holds give {hd} {hc}"))
    return out


def _limits(conn: Connection) -> list[Violation]:
    rows = conn.execute(text(
        "SELECT id, flags, debits_posted, credits_posted, debits_pending, credits_pending "
        "FROM ledger_accounts WHERE flags <> 0"))
    out = []
    for acct, flags, dp, cp, dpend, cpend in rows:
        if flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and dp + dpend > cp:
            out.append(Violation("limit_violated", f"acc_{acct}",
                                 f"debits {dp} + pending {dpend} exceed credits {cp}"))
        if flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and cp + cpend > dp:
            out.append(Violation("limit_violated", f"acc_{acct}",
                                 f"credits {cp} + pending {cpend} exceed debits {dp}"))
    return out


def _legs(conn: Connection) -> list[Violation]:
    rows = conn.execute(text(
        "SELECT entry_id, leg_no, COUNT(*), SUM(amount), SUM(side) FROM ledger_postings "
        "GROUP BY entry_id, leg_no HAVING COUNT(*) <> 2 OR SUM(amount) <> 0 OR SUM(side) <> 1"))
    return [Violation("entry_unbalanced", f"txf_{entry}", f"leg {leg}: {n} postings sum {total}")
            for entry, leg, n, total, _ in rows]
