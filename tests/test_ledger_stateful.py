"""Our small VOPR: random batches against the ledger, checked against a model kept in Python.

A Hypothesis ``RuleBasedStateMachine`` opens accounts (wallets that must not go below zero,
unrestricted institution and merchant accounts, a draw-only limit account; yuan and dollars),
posts random batches (valid and invalid entries, linked chains, replays of earlier keys with the
same or other content, holds placed, posted in part or whole and voided, reversals), moves the
clock and expires holds, and freezes, unfreezes and closes accounts.

The model below is deliberately naive: plain dicts of counters, whole-state copies for chains,
and the rules of the ledger as its docstrings state them. After every step an ``@invariant``
runs the ledger's own ``check_invariants`` and compares every account and hold with the model.
Each example gets a fresh database: a copy of the migrated SQLite template, or a truncated
PostgreSQL database.
"""

from __future__ import annotations

import copy
import itertools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, event, text

from lianjie import ledger as L
from lianjie.clock import ManualClock
from lianjie.db import make_engine, metadata, reader, writer
from lianjie.errors import DomainError, ErrorCode

E = ErrorCode
Leg = L.Leg
Entry = L.Entry
Flags = L.AccountFlags
WALLET = Flags.DEBITS_MUST_NOT_EXCEED_CREDITS
DRAW_ONLY = Flags.CREDITS_MUST_NOT_EXCEED_DEBITS
POSTED, PENDING = L.EntryKind.POSTED, L.EntryKind.PENDING
POST, VOID = L.EntryKind.POST_PENDING, L.EntryKind.VOID_PENDING
HS = L.HoldStatus
OPEN, FROZEN, CLOSED = L.AccountStatus.OPEN, L.AccountStatus.FROZEN, L.AccountStatus.CLOSED
ACCOUNTS_MAX = 12
HISTORY_MAX = 60  # entries remembered for replays
MISSING_ID = 10**12


# -- the model -----------------------------------------------------------------------------------

@dataclass
class MAccount:
    id: int
    currency: str
    flags: Flags
    status: str = OPEN
    dp: int = 0
    cp: int = 0
    dpend: int = 0
    cpend: int = 0


@dataclass
class MHold:
    legs: tuple[L.Leg, ...]
    expires_at: datetime | None
    status: HS = HS.PENDING


@dataclass
class MEntry:
    id: int
    content: Entry  # the request without ``linked``: what a replay must match
    posted: tuple[L.Leg, ...]  # what moved, leg by leg (legs that moved nothing left out)


@dataclass
class World:
    """What the ledger holds. A batch works on a copy; a failed chain goes back to a copy."""

    accounts: dict[int, MAccount] = field(default_factory=dict)
    holds: dict[int, MHold] = field(default_factory=dict)
    entries: dict[str, MEntry] = field(default_factory=dict)
    reversed: set[int] = field(default_factory=set)


@dataclass
class Pending:
    """A batch in progress: the world so far and what this batch created, by position."""

    world: World
    seen: dict[str, tuple[int, Entry]] = field(default_factory=dict)  # key -> position, content
    posted: dict[int, tuple[L.Leg, ...]] = field(default_factory=dict)
    new_holds: dict[int, MHold] = field(default_factory=dict)


# What one entry is expected to do: ("created",), ("replay", entry_id), ("replay_at", position),
# or ("error", code).
Outcome = tuple[object, ...]


def content(e: Entry) -> Entry:
    return replace(e, linked=False)


def by_id(world: World) -> dict[int, MEntry]:
    return {m.id: m for m in world.entries.values()}


def shape_error(e: Entry) -> ErrorCode | None:
    if e.kind in (POSTED, PENDING):
        if not e.legs:
            return E.ENTRY_EMPTY
        for leg in e.legs:
            if leg.amount <= 0:
                return E.INVALID_AMOUNT
            if leg.debit_account_id == leg.credit_account_id:
                return E.ACCOUNTS_MUST_BE_DIFFERENT
    return None


def status_error(w: World, legs: tuple[L.Leg, ...], *, voiding: bool) -> ErrorCode | None:
    for leg in legs:
        d, c = w.accounts.get(leg.debit_account_id), w.accounts.get(leg.credit_account_id)
        if d is None or c is None:
            return E.ACCOUNT_NOT_FOUND
        if d.currency != c.currency:
            return E.CURRENCY_MISMATCH
        for a in (d, c):
            if a.status == CLOSED or (a.status == FROZEN and not voiding):
                return E.ACCOUNT_CLOSED if a.status == CLOSED else E.ACCOUNT_FROZEN
    return None


def limit_error(a: MAccount) -> ErrorCode | None:
    if a.flags & WALLET and a.dp + a.dpend > a.cp:
        return E.INSUFFICIENT_FUNDS
    if a.flags & DRAW_ONLY and a.cp + a.cpend > a.dp:
        return E.CREDIT_LIMIT_EXCEEDED
    return None


def move(w: World, legs: tuple[L.Leg, ...], *, pending: bool) -> ErrorCode | None:
    """Apply legs to a trial copy; keep it only if every account stays within its limit."""
    trial = {i: copy.copy(a) for i, a in w.accounts.items()}
    order: list[int] = []
    for leg in legs:
        d, c = trial[leg.debit_account_id], trial[leg.credit_account_id]
        if pending:
            d.dpend += leg.amount
            c.cpend += leg.amount
        else:
            d.dp += leg.amount
            c.cp += leg.amount
        order += [d.id, c.id]
    for account_id in dict.fromkeys(order):
        error = limit_error(trial[account_id])
        if error is not None:
            return error
    w.accounts = trial
    return None


def resolve(p: Pending, e: Entry, index: int, now: datetime) -> ErrorCode | None:
    w = p.world
    assert e.pending_id is not None
    hold = w.holds.get(e.pending_id)
    if hold is None:
        return E.HOLD_NOT_FOUND
    if hold.status != HS.PENDING:
        return {HS.POSTED: E.HOLD_ALREADY_POSTED, HS.VOIDED: E.HOLD_ALREADY_VOIDED,
                HS.EXPIRED: E.HOLD_EXPIRED}[hold.status]
    expired = hold.expires_at is not None and now >= hold.expires_at
    if e.kind == POST and expired:
        return E.HOLD_EXPIRED
    if e.kind == POST:
        amounts = e.amounts if e.amounts is not None else tuple(g.amount for g in hold.legs)
    else:
        amounts = tuple(0 for _ in hold.legs)
    if len(amounts) != len(hold.legs):
        return E.INVALID_REQUEST
    if any(a > g.amount for a, g in zip(amounts, hold.legs, strict=True)):
        return E.HOLD_AMOUNT_EXCEEDED
    error = status_error(w, hold.legs, voiding=e.kind == VOID)
    if error is not None:
        return error
    for g, a in zip(hold.legs, amounts, strict=True):
        d, c = w.accounts[g.debit_account_id], w.accounts[g.credit_account_id]
        d.dpend, c.cpend = d.dpend - g.amount, c.cpend - g.amount
        d.dp, c.cp = d.dp + a, c.cp + a
    hold.status = HS.POSTED if e.kind == POST else HS.VOIDED
    p.posted[index] = tuple(replace(g, amount=a) for g, a in zip(hold.legs, amounts, strict=True)
                            if a)
    return None


def effects(p: Pending, e: Entry, index: int, now: datetime) -> ErrorCode | None:
    w = p.world
    if e.kind in (POST, VOID):
        return resolve(p, e, index, now)
    if e.reverses_id is not None:
        target = by_id(w).get(e.reverses_id)
        if target is None or not target.posted:
            return E.ENTRY_NOT_FOUND
        if e.reverses_id in w.reversed:
            return E.ALREADY_REVERSED
        if e.legs != swapped(target.posted):
            return E.INVALID_REQUEST
    error = status_error(w, e.legs, voiding=False) or move(w, e.legs, pending=e.kind == PENDING)
    if error is not None:
        return error
    if e.reverses_id is not None:
        w.reversed.add(e.reverses_id)
    if e.kind == PENDING:
        expires = now + timedelta(seconds=e.timeout_s) if e.timeout_s else None
        p.new_holds[index] = MHold(e.legs, expires)
    else:
        p.posted[index] = e.legs
    return None


def one(p: Pending, e: Entry, index: int, now: datetime) -> Outcome:
    error = shape_error(e)
    if error is not None:
        return ("error", error)
    prior = p.world.entries.get(e.key)
    if prior is not None:
        return ("replay", prior.id) if prior.content == content(e) else (
            "error", E.EXISTS_WITH_DIFFERENT_FIELDS)
    if e.key in p.seen:
        position, earlier = p.seen[e.key]
        return ("replay_at", position) if earlier == content(e) else (
            "error", E.EXISTS_WITH_DIFFERENT_FIELDS)
    error = effects(p, e, index, now)
    if error is not None:
        return ("error", error)
    p.seen[e.key] = (index, content(e))
    return ("created",)


def predict(world: World, batch: list[Entry], now: datetime) -> tuple[list[Outcome], Pending]:
    p = Pending(copy.deepcopy(world))
    out: list[Outcome] = [("error", E.INVALID_REQUEST)] * len(batch)
    start = 0
    while start < len(batch):
        end = start
        while batch[end].linked and end + 1 < len(batch):
            end += 1
        if batch[end].linked:
            out[start:] = [("error", E.LINKED_CHAIN_OPEN)] * (len(batch) - start)
            break
        saved = copy.deepcopy(p)
        for k in range(start, end + 1):
            out[k] = one(p, batch[k], k, now)
            if out[k][0] == "error":
                if end > start:
                    failed = out[k]
                    p = saved
                    out[start:end + 1] = [("error", E.LINKED_EVENT_FAILED)] * (end - start + 1)
                    out[k] = failed
                break
        start = end + 1
    return out, p


def swapped(legs: tuple[L.Leg, ...]) -> tuple[L.Leg, ...]:
    return tuple(Leg(g.credit_account_id, g.debit_account_id, g.amount) for g in legs)


# -- the machine ---------------------------------------------------------------------------------

class LedgerMachine(RuleBasedStateMachine):
    fresh_engine: Callable[[], tuple[Engine, bool]]

    def __init__(self) -> None:
        super().__init__()
        self.engine, self.owns_engine = type(self).fresh_engine()
        self.clock = ManualClock()
        self.world = World()
        self.history: list[Entry] = []
        self.keys = itertools.count(1)
        self.owners = itertools.count(1)

    def teardown(self) -> None:
        if self.owns_engine:
            self.engine.dispose()

    # accounts

    def _open(self, currency: str, flags: Flags, purpose: str = L.Purpose.WALLET) -> int:
        with writer(self.engine) as c:
            a = L.open_account(c, self.clock.now(), f"own_{next(self.owners)}", purpose,
                               currency, flags)
        self.world.accounts[a.id] = MAccount(a.id, currency, flags)
        return a.id

    @initialize()
    def open_books(self) -> None:
        self.bank = {cur: self._open(cur, Flags.NONE, L.Purpose.INSTITUTION_SETTLEMENT)
                     for cur in ("CNY", "USD")}
        for cur, flags in [("CNY", WALLET), ("CNY", WALLET), ("CNY", Flags.NONE),
                           ("USD", WALLET), ("USD", Flags.NONE), ("CNY", DRAW_ONLY)]:
            self._open(cur, flags)

    @precondition(lambda self: len(self.world.accounts) < ACCOUNTS_MAX)
    @rule(currency=st.sampled_from(["CNY", "USD"]),
          flags=st.sampled_from([WALLET, WALLET, Flags.NONE, DRAW_ONLY]))
    def open_account(self, currency: str, flags: Flags) -> None:
        self._open(currency, flags)

    @rule(data=st.data(), status=st.sampled_from([FROZEN, FROZEN, OPEN, OPEN, OPEN, CLOSED]))
    def set_status(self, data: st.DataObject, status: L.AccountStatus) -> None:
        account_id = data.draw(st.sampled_from(sorted(self.world.accounts)))
        a = self.world.accounts[account_id]
        expected: ErrorCode | None = None
        if a.status == CLOSED and status != CLOSED:
            expected = E.ACCOUNT_CLOSED
        elif status == CLOSED and (a.cp != a.dp or a.dpend or a.cpend):
            expected = E.INVALID_STATE_TRANSITION
        try:
            with writer(self.engine) as c:
                got = L.set_account_status(c, account_id, status)
        except DomainError as exc:
            assert exc.code == expected
            return
        assert expected is None and got.status == status
        a.status = status

    # entries

    def _accounts(self, currency: str | None = None) -> list[int]:
        return sorted(i for i, a in self.world.accounts.items()
                      if currency is None or a.currency == currency)

    def _legs(self, data: st.DataObject, legs_max: int = 3) -> tuple[L.Leg, ...]:
        legs = []
        for _ in range(data.draw(st.integers(1, legs_max), label="legs")):
            # None: any two accounts, which may not share a currency
            pool = self._accounts(data.draw(st.sampled_from(["CNY", "CNY", "USD", None])))
            debit, credit = data.draw(st.sampled_from(pool)), data.draw(st.sampled_from(pool))
            if debit == credit:
                credit = data.draw(st.sampled_from(pool))
            legs.append(Leg(debit, credit, data.draw(st.integers(1, 4_000))))
        return tuple(legs)

    @staticmethod
    def _near(data: st.DataObject, top: int) -> int:
        """An amount up to ``top``, often exactly on the boundary or one past it."""
        return data.draw(st.sampled_from([top, top + 1]) | st.integers(1, max(top, 1)))

    def _topup(self, data: st.DataObject, key: str) -> Entry:
        cur = data.draw(st.sampled_from(["CNY", "USD"]))
        to = data.draw(st.sampled_from([i for i in self._accounts(cur) if i != self.bank[cur]]))
        a = self.world.accounts[to]
        room = a.dp - a.cp - a.cpend  # what a draw-only account may still take
        amount = self._near(data, room) if a.flags & DRAW_ONLY else data.draw(
            st.integers(1, 10_000))
        return Entry(key, (Leg(self.bank[cur], to, amount),), code="topup")

    def _pay(self, data: st.DataObject, key: str, kind: L.EntryKind) -> Entry:
        funded = sorted(i for i, a in self.world.accounts.items()
                        if a.status == OPEN and a.cp - a.dp - a.dpend > 0)
        if not funded:
            return Entry(key, self._legs(data), kind=kind)
        a = self.world.accounts[data.draw(st.sampled_from(funded))]
        payee = data.draw(st.sampled_from([i for i in self._accounts(a.currency) if i != a.id]))
        amount = self._near(data, a.cp - a.dp - a.dpend)
        timeout = data.draw(st.sampled_from([0, 1, 60, 600])) if kind == PENDING else 0
        return Entry(key, (Leg(a.id, payee, amount),), kind=kind, timeout_s=timeout)

    def _bad(self, data: st.DataObject, key: str) -> Entry:
        a = data.draw(st.sampled_from(self._accounts()))
        return data.draw(st.sampled_from([
            Entry(key, ()), Entry(key, (Leg(a, a, 100),)),
            Entry(key, (Leg(self.bank["CNY"], a, 0),))]))

    def _resolve(self, data: st.DataObject, key: str, kind: L.EntryKind) -> Entry:
        holds = self.world.holds
        still_open = sorted(i for i, h in holds.items() if h.status == HS.PENDING)
        if not still_open and data.draw(st.booleans()):
            return self._pay(data, key, PENDING)  # nothing to resolve yet: place a hold
        pool = [*sorted(holds), MISSING_ID]
        if still_open and data.draw(st.integers(0, 4)) > 0:  # mostly one that can still resolve
            pool = still_open
        hold_id = data.draw(st.sampled_from(pool))
        if kind == VOID or hold_id == MISSING_ID:
            return Entry(key, kind=kind, pending_id=hold_id)
        held = holds[hold_id].legs
        part = [st.integers(0, g.amount) | st.just(g.amount + 1) for g in held]
        amounts = data.draw(st.none() | st.tuples(*part) | st.just((1,) * (len(held) + 1)))
        return Entry(key, kind=POST, pending_id=hold_id, amounts=amounts)

    def _reverse(self, data: st.DataObject, key: str) -> Entry:
        targets = sorted(m.id for m in self.world.entries.values() if m.posted)
        if not targets:
            return Entry(key, (Leg(self.bank["CNY"], self.bank["USD"], 1),),
                         reverses_id=MISSING_ID)
        target = by_id(self.world)[data.draw(st.sampled_from(targets))]
        return Entry(key, swapped(target.posted), code="reversal", reverses_id=target.id)

    def _replay(self, data: st.DataObject, key: str, so_far: list[Entry], same: bool) -> Entry:
        """An earlier request again, from an earlier batch or this one, as it was or altered."""
        if not self.history and not so_far:
            return Entry(key, self._legs(data))
        earlier = data.draw(st.sampled_from(self.history + so_far))
        return earlier if same else replace(earlier,
                                            memo=None if earlier.memo else "other content")

    def _entry(self, data: st.DataObject, so_far: list[Entry]) -> Entry:
        key = f"k{next(self.keys)}"
        shape = data.draw(st.sampled_from(
            ["topup", "topup", "pay", "pay", "move", "move", "bad", "auth", "auth", "hold",
             "post", "post", "post", "void", "reverse", "reverse", "replay", "replay",
             "replay_other"]), label="shape")
        make: dict[str, Callable[[], Entry]] = {
            "topup": lambda: self._topup(data, key),
            "pay": lambda: self._pay(data, key, POSTED),
            "auth": lambda: self._pay(data, key, PENDING),
            "move": lambda: Entry(key, self._legs(data)),
            "hold": lambda: Entry(key, self._legs(data, 2), kind=PENDING, code="auth",
                                  timeout_s=data.draw(st.sampled_from([0, 1, 60, 600]))),
            "bad": lambda: self._bad(data, key),
            "post": lambda: self._resolve(data, key, POST),
            "void": lambda: self._resolve(data, key, VOID),
            "reverse": lambda: self._reverse(data, key),
            "replay": lambda: self._replay(data, key, so_far, True),
            "replay_other": lambda: self._replay(data, key, so_far, False),
        }
        return make[shape]()

    @rule(data=st.data(), size=st.integers(1, 8))
    def post_batch(self, data: st.DataObject, size: int) -> None:
        # Requests arrive over time, so holds run out between batches too.
        self.clock.advance(timedelta(seconds=data.draw(st.sampled_from([0, 0, 1, 30]))))
        batch: list[Entry] = []
        for _ in range(size):
            linked = data.draw(st.sampled_from([False, False, False, True]), label="linked")
            batch.append(replace(self._entry(data, batch), linked=linked))
        now = self.clock.now()
        expected, pending = predict(self.world, batch, now)
        with writer(self.engine) as c:
            results = L.create_entries(c, now, batch)
        self._check(batch, expected, results)
        self._adopt(batch, expected, results, pending)

    @rule(data=st.data())
    def post_one(self, data: st.DataObject) -> None:
        """Most requests come alone."""
        self.post_batch(data, 1)

    def _check(self, batch: list[Entry], expected: list[Outcome],
               results: list[L.EntryResult]) -> None:
        got = [("error", r.error) if r.error else ("replay" if r.replayed else "created", None)
               for r in results]
        want = [("error", o[1]) if o[0] == "error" else
                ("replay" if o[0] in ("replay", "replay_at") else "created", None)
                for o in expected]
        assert got == want, (batch, results)
        known = {m.id for m in self.world.entries.values()}
        for o, r in zip(expected, results, strict=True):
            if o[0] == "replay":
                assert r.entry_id == o[1]
            elif o[0] == "replay_at":
                assert r.entry_id == results[int(o[1])].entry_id  # type: ignore[call-overload]
            elif o[0] == "created":
                assert r.entry_id is not None and r.entry_id not in known
                known.add(r.entry_id)

    def _adopt(self, batch: list[Entry], expected: list[Outcome],
               results: list[L.EntryResult], pending: Pending) -> None:
        world = pending.world
        for k, (e, o, r) in enumerate(zip(batch, expected, results, strict=True)):
            if o[0] != "created":
                continue
            assert r.entry_id is not None
            world.entries[e.key] = MEntry(r.entry_id, content(e), pending.posted.get(k, ()))
            if k in pending.new_holds:
                world.holds[r.entry_id] = pending.new_holds[k]
        self.world = world
        self.history = (self.history + batch)[-HISTORY_MAX:]

    # time

    @rule(seconds=st.sampled_from([0, 1, 59, 60, 600, 3_600]),
          sweep=st.sampled_from([False, False, True]))
    def advance_clock(self, seconds: int, sweep: bool) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        if sweep:
            self._expire_holds()

    def _expire_holds(self) -> None:
        now = self.clock.now()
        due = [h for h in self.world.holds.values()
               if h.status == HS.PENDING and h.expires_at is not None and h.expires_at <= now]
        with writer(self.engine) as c:
            assert L.expire_holds(c, now) == len(due)
        for hold in due:
            hold.status = HS.EXPIRED
            for g in hold.legs:
                self.world.accounts[g.debit_account_id].dpend -= g.amount
                self.world.accounts[g.credit_account_id].cpend -= g.amount

    # the check after every step

    @invariant()
    def books_agree_with_the_model(self) -> None:
        if not self.world.accounts:
            return
        with reader(self.engine) as c:
            L.check_invariants(c)
            accounts = L.get_accounts(c, self.world.accounts)
            holds = {i: L.get_hold(c, i) for i in self.world.holds}
            at_now = {i: L.balance_at(c, i, self.clock.now()) for i in self.world.accounts}
        for account_id, m in self.world.accounts.items():
            a = accounts[account_id]
            assert (a.status, a.debits_posted, a.credits_posted, a.debits_pending,
                    a.credits_pending) == (m.status, m.dp, m.cp, m.dpend, m.cpend), account_id
            assert at_now[account_id] == a.balance
            assert a.available >= 0 or not a.flags & WALLET
        for hold_id, h in self.world.holds.items():
            found = holds[hold_id]
            assert found is not None and found.status == h.status, hold_id


# -- running it ----------------------------------------------------------------------------------

def _truncate(engine: Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
    # The machine checks the ledger's logic, not durability: a commit need not wait for the disk
    # (hundreds of them per example). Runs after make_engine's own connect hook.
    dbapi_conn.execute("PRAGMA synchronous=OFF")


def test_ledger_agrees_with_its_model(db_kind: str, request: pytest.FixtureRequest,
                                      tmp_path: Path) -> None:
    if db_kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        numbers = itertools.count()

        def fresh() -> tuple[Engine, bool]:
            path = tmp_path / f"vopr-{next(numbers)}.sqlite3"
            shutil.copyfile(template, path)
            engine = make_engine(f"sqlite:///{path}")
            event.listen(engine, "connect", _no_fsync)
            return engine, True

        examples, steps = 40, 30
    else:
        pg: Engine = request.getfixturevalue("pg_engine")

        def fresh() -> tuple[Engine, bool]:
            _truncate(pg)
            return pg, False

        examples, steps = 15, 25
    machine = type("LedgerMachineOn" + db_kind.title(), (LedgerMachine,),
                   {"fresh_engine": staticmethod(fresh)})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
