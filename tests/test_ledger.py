"""The ledger, as worked examples of bookkeeping, on SQLite and PostgreSQL.

Every example opens the same small set of books: a bank's settlement account (an institution,
which may go negative), two consumer wallets, a shop, the platform's fee revenue, a service
provider's commission, and a US-dollar pair. Alice's wallet starts with 200.00 yuan, topped up
from the bank. Each example ends by asking ``verify()`` whether the books still balance; the last
section tampers with rows behind the ledger's back and checks that ``verify()`` notices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from lianjie import ledger as L
from lianjie.clock import ManualClock
from lianjie.db import make_engine, reader, writer
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger.model import (
    COUNTER_MAX,
    KEY_LENGTH_MAX,
    LEGS_PER_ENTRY_MAX,
    SYSTEM_KEY_PREFIX,
)
from lianjie.money import AMOUNT_MAX, allocate, bps_of

E = ErrorCode
Leg = L.Leg
Entry = L.Entry
WALLET = L.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
DRAW_ONLY = L.AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
PENDING, POST, VOID = L.EntryKind.PENDING, L.EntryKind.POST_PENDING, L.EntryKind.VOID_PENDING
OPENING_TOPUP = 20_000
WAIT_S = 30  # a bound on any wait, so a bug fails the test instead of hanging it
RACE_POLLS_MAX = 3000  # of the other session's state, 10 ms apart


@dataclass(frozen=True)
class Books:
    engine: Engine
    clock: ManualClock
    bank: int
    alice: int
    bob: int
    shop: int
    fee: int
    sp: int
    usd_bank: int
    usd_wallet: int

    def run(self, *entries: Entry) -> list[L.EntryResult]:
        with writer(self.engine) as c:
            return L.create_entries(c, self.clock.now(), entries)

    def one(self, entry: Entry) -> L.EntryResult:
        (result,) = self.run(entry)
        return result

    def ok(self, entry: Entry) -> int:
        result = self.one(entry)
        assert result.ok and not result.replayed, result
        assert result.entry_id is not None
        return result.entry_id

    def account(self, account_id: int) -> L.Account:
        with reader(self.engine) as c:
            return L.require_account(c, account_id)

    def balances(self, *account_ids: int) -> list[int]:
        return [self.account(a).balance for a in account_ids]

    def set_status(self, account_id: int, status: L.AccountStatus) -> L.Account:
        with writer(self.engine) as c:
            return L.set_account_status(c, account_id, status)

    def entry(self, entry_id: int) -> L.EntryRecord:
        with reader(self.engine) as c:
            found = L.get_entry(c, entry_id)
        assert found is not None
        return found

    def hold(self, hold_id: int) -> L.Hold:
        with reader(self.engine) as c:
            found = L.get_hold(c, hold_id)
        assert found is not None
        return found

    def violations(self) -> list[L.Violation]:
        with reader(self.engine) as c:
            return L.verify(c)

    def tamper(self, sql: str, **params: object) -> None:
        """Edit one row behind the ledger's back, as an attacker with DDL rights would: with
        the immutability triggers out of the way for the length of the edit."""
        with writer(self.engine) as c:
            _without_triggers(c, lambda: c.execute(text(sql), params).rowcount == 1)


def _without_triggers(c: Connection, edit: Callable[[], bool]) -> None:
    if c.dialect.name == "postgresql":
        for table in ("ledger_entries", "ledger_postings"):
            c.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_immutable"))
        assert edit()
        for table in ("ledger_entries", "ledger_postings"):
            c.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_immutable"))
        return
    names = [r[0] for r in c.execute(text(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'ledger_%'"))]
    sql = [r[0] for r in c.execute(text(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'ledger_%'"))]
    for name in names:
        c.execute(text(f"DROP TRIGGER {name}"))
    assert edit()
    for create in sql:
        c.execute(text(create))


@pytest.fixture
def books(engine: Engine, clock: ManualClock) -> Iterator[Books]:
    now = clock.now()
    with writer(engine) as c:
        def acct(owner: str, purpose: L.Purpose, currency: str = "CNY",
                 flags: L.AccountFlags = L.AccountFlags.NONE) -> int:
            return L.open_account(c, now, owner, purpose, currency, flags).id

        b = Books(engine, clock,
                  bank=acct("ins_bank", L.Purpose.INSTITUTION_SETTLEMENT),
                  alice=acct("cus_alice", L.Purpose.WALLET, flags=WALLET),
                  bob=acct("cus_bob", L.Purpose.WALLET, flags=WALLET),
                  shop=acct("mch_shop", L.Purpose.MERCHANT_PENDING),
                  fee=acct("platform", L.Purpose.FEE_REVENUE),
                  sp=acct("sp_acme", L.Purpose.SP_COMMISSION),
                  usd_bank=acct("ins_bank", L.Purpose.INSTITUTION_SETTLEMENT, "USD"),
                  usd_wallet=acct("cus_alice", L.Purpose.WALLET, "USD", WALLET))
    b.ok(Entry("topup-alice", (Leg(b.bank, b.alice, OPENING_TOPUP),), code="topup"))
    yield b


def errors(results: Sequence[L.EntryResult]) -> list[ErrorCode | None]:
    return [r.error for r in results]


# -- accounts ------------------------------------------------------------------------------------

def test_opening_an_account_twice_returns_the_same_account(books: Books) -> None:
    with writer(books.engine) as c:
        again = L.open_account(c, books.clock.now(), "cus_alice", L.Purpose.WALLET, flags=WALLET)
        assert again.id == books.alice and again.balance == OPENING_TOPUP
        assert [a.id for a in L.accounts_of(c, "cus_alice")] == [books.alice, books.usd_wallet]
        with pytest.raises(DomainError) as exc:
            L.open_account(c, books.clock.now(), "cus_carol", L.Purpose.WALLET, "XXX")
        assert exc.value.code == E.UNKNOWN_CURRENCY
        assert L.find_account(c, "cus_carol", L.Purpose.WALLET) is None
        with pytest.raises(DomainError) as exc:
            L.require_account(c, 999_999)
        assert exc.value.code == E.ACCOUNT_NOT_FOUND


# -- entries ---------------------------------------------------------------------------------------

def test_a_payment_is_one_multi_leg_entry(books: Books) -> None:
    # Alice pays the shop 100.00; the shop pays a 0.6% fee; a fifth of the fee is the SP's.
    price = 10_000
    fee = bps_of(price, 60)
    platform_share, sp_share = allocate(fee, [4, 1])
    entry_id = books.ok(Entry("pay-1", (
        Leg(books.alice, books.shop, price),
        Leg(books.shop, books.fee, fee),
        Leg(books.fee, books.sp, sp_share),
    ), code="payment"))
    assert (fee, platform_share, sp_share) == (60, 48, 12)
    assert books.balances(books.alice, books.shop, books.fee, books.sp) == [
        OPENING_TOPUP - price, price - fee, platform_share, sp_share]
    record = books.entry(entry_id)
    assert (record.key, record.code, record.kind) == ("pay-1", "payment", L.EntryKind.POSTED)
    assert [(p.leg_no, p.account_id, p.amount) for p in record.postings] == [
        (0, books.alice, -price), (0, books.shop, price),
        (1, books.shop, -fee), (1, books.fee, fee),
        (2, books.fee, -sp_share), (2, books.sp, sp_share)]
    assert sum(p.amount for p in record.postings) == 0
    alice_posting = record.postings[0]
    assert (alice_posting.account_seq, alice_posting.balance_after) == (2, OPENING_TOPUP - price)
    assert books.account(books.shop).posting_count == 2
    assert books.violations() == []


def test_each_entry_in_a_batch_succeeds_or_fails_alone(books: Books) -> None:
    results = books.run(
        Entry("pay-1", (Leg(books.alice, books.shop, 1_000),)),
        Entry("pay-2", (Leg(books.bob, books.shop, 1),)),  # Bob has nothing
        Entry("gift-1", (Leg(books.alice, books.bob, 500),)),
        Entry("pay-3", (Leg(books.bob, books.shop, 500),)),  # now Bob can pay
    )
    assert errors(results) == [None, E.INSUFFICIENT_FUNDS, None, None]
    assert results[1].entry_id is None
    ids = [r.entry_id for r in results if r.ok]
    assert len(set(ids)) == 3
    assert books.balances(books.alice, books.bob, books.shop) == [
        OPENING_TOPUP - 1_500, 0, 1_500]
    with reader(books.engine) as c:
        assert L.get_entry_by_key(c, "pay-2") is None
    # A refused entry left no trace, so its key is still free.
    books.ok(Entry("topup-bob", (Leg(books.bank, books.bob, 1),)))
    assert books.one(Entry("pay-2", (Leg(books.bob, books.shop, 1),))).ok
    assert books.violations() == []


def test_one_call_conveniences_raise_the_entry_error(books: Books) -> None:
    with writer(books.engine) as c:
        result = L.transfer(c, books.clock.now(), "pay-1", books.alice, books.shop, 2_000)
        assert result.ok and result.entry_id is not None
        with pytest.raises(DomainError) as exc:
            L.transfer(c, books.clock.now(), "pay-2", books.alice, books.shop, OPENING_TOPUP)
        assert exc.value.code == E.INSUFFICIENT_FUNDS
        with pytest.raises(DomainError) as exc:
            L.post(c, books.clock.now(), Entry("pay-3", ()))
        assert exc.value.code == E.ENTRY_EMPTY
    assert books.balances(books.alice, books.shop) == [OPENING_TOPUP - 2_000, 2_000]


# -- linked chains -------------------------------------------------------------------------------

def test_a_linked_chain_commits_together(books: Books) -> None:
    results = books.run(
        Entry("split-1", (Leg(books.alice, books.bob, 3_000),), linked=True),
        Entry("split-2", (Leg(books.bob, books.shop, 3_000),), linked=True),
        Entry("split-3", (Leg(books.shop, books.fee, 18),)),
    )
    assert errors(results) == [None, None, None]
    assert books.balances(books.alice, books.bob, books.shop, books.fee) == [
        OPENING_TOPUP - 3_000, 0, 2_982, 18]
    assert books.violations() == []


def test_one_failure_fails_the_whole_chain_and_leaves_no_trace(books: Books) -> None:
    before = [books.account(a) for a in (books.alice, books.bob, books.shop)]
    results = books.run(
        Entry("chain-1", (Leg(books.alice, books.bob, 1_000),), linked=True),
        Entry("chain-2", (Leg(books.bob, books.shop, 5_000),), linked=True),  # fails
        Entry("chain-3", (Leg(books.alice, books.shop, 1),)),
        Entry("after", (Leg(books.alice, books.shop, 700),)),
    )
    assert errors(results) == [E.LINKED_EVENT_FAILED, E.INSUFFICIENT_FUNDS,
                               E.LINKED_EVENT_FAILED, None]
    assert [r.entry_id for r in results[:3]] == [None, None, None]
    after = [books.account(a) for a in (books.alice, books.bob, books.shop)]
    assert after[0].balance == before[0].balance - 700
    assert after[0].posting_count == before[0].posting_count + 1
    assert after[1] == before[1]
    assert after[2].balance == 700
    with reader(books.engine) as c:
        assert [L.get_entry_by_key(c, k) for k in ("chain-1", "chain-2", "chain-3")] == [None] * 3
        assert L.account_postings(c, books.bob) == []
    assert books.violations() == []


def test_a_failed_chain_frees_its_keys_within_the_batch(books: Books) -> None:
    results = books.run(
        Entry("a", (Leg(books.alice, books.bob, 100),), linked=True),
        Entry("b", (Leg(books.bob, books.shop, 0),)),  # invalid amount fails the chain
        Entry("a", (Leg(books.alice, books.shop, 100),)),  # other content, same key: now free
    )
    assert errors(results) == [E.LINKED_EVENT_FAILED, E.INVALID_AMOUNT, None]
    assert books.balances(books.bob, books.shop) == [0, 100]
    assert books.violations() == []


def test_a_chain_open_at_the_end_of_the_batch_fails(books: Books) -> None:
    results = books.run(
        Entry("first", (Leg(books.alice, books.shop, 100),)),
        Entry("open-1", (Leg(books.alice, books.shop, 200),), linked=True),
        Entry("open-2", (Leg(books.alice, books.shop, 300),), linked=True),
    )
    assert errors(results) == [None, E.LINKED_CHAIN_OPEN, E.LINKED_CHAIN_OPEN]
    assert books.balances(books.shop) == [100]
    assert errors(books.run(Entry("alone", (Leg(books.alice, books.shop, 1),),
                                  linked=True))) == [E.LINKED_CHAIN_OPEN]
    assert books.violations() == []


def test_a_failed_chain_releases_a_hold_it_had_posted(books: Books) -> None:
    hold_id = books.ok(Entry("hold", (Leg(books.alice, books.shop, 4_000),), kind=PENDING))
    results = books.run(
        Entry("capture", kind=POST, pending_id=hold_id, linked=True),
        Entry("oops", (Leg(books.bob, books.fee, 1),)),
    )
    assert errors(results) == [E.LINKED_EVENT_FAILED, E.INSUFFICIENT_FUNDS]
    assert books.hold(hold_id).status == L.HoldStatus.PENDING
    alice = books.account(books.alice)
    assert (alice.balance, alice.debits_pending) == (OPENING_TOPUP, 4_000)
    assert books.one(Entry("capture", kind=POST, pending_id=hold_id)).ok
    assert books.balances(books.alice, books.shop) == [OPENING_TOPUP - 4_000, 4_000]
    assert books.violations() == []


# -- idempotency ---------------------------------------------------------------------------------

def test_same_key_same_content_replays_the_original(books: Books) -> None:
    pay = Entry("pay-1", (Leg(books.alice, books.shop, 1_500),), memo="coffee")
    first = books.ok(pay)
    before = books.account(books.alice)
    again = books.one(pay)
    assert again == L.EntryResult(first, None, replayed=True)
    # ``linked`` is not content: a replay inside a chain is still a replay.
    results = books.run(Entry("pay-1", pay.legs, memo="coffee", linked=True),
                        Entry("tip", (Leg(books.alice, books.shop, 100),)))
    assert [(r.entry_id == first, r.error, r.replayed) for r in results] == [
        (True, None, True), (False, None, False)]
    assert books.account(books.alice).balance == before.balance - 100
    assert books.account(books.alice).posting_count == before.posting_count + 1
    assert books.violations() == []


def test_same_key_other_content_is_refused(books: Books) -> None:
    first = books.ok(Entry("pay-1", (Leg(books.alice, books.shop, 1_500),)))
    for other in (
        Entry("pay-1", (Leg(books.alice, books.shop, 1_501),)),
        Entry("pay-1", (Leg(books.alice, books.fee, 1_500),)),
        Entry("pay-1", (Leg(books.alice, books.shop, 1_500),), memo="other"),
        Entry("pay-1", (Leg(books.alice, books.shop, 1_500),), code="refund"),
        Entry("pay-1", (Leg(books.alice, books.shop, 1_500),), kind=PENDING),
    ):
        result = books.one(other)
        assert (result.error, result.entry_id) == (E.EXISTS_WITH_DIFFERENT_FIELDS, first)
    assert books.balances(books.alice, books.shop) == [OPENING_TOPUP - 1_500, 1_500]
    assert books.violations() == []


def test_a_key_twice_in_one_batch(books: Books) -> None:
    pay = Entry("pay-1", (Leg(books.alice, books.shop, 1_000),))
    results = books.run(pay, pay, Entry("pay-1", (Leg(books.alice, books.shop, 999),)))
    assert [(r.error, r.replayed) for r in results] == [
        (None, False), (None, True), (E.EXISTS_WITH_DIFFERENT_FIELDS, False)]
    assert results[0].entry_id == results[1].entry_id is not None
    assert books.balances(books.shop) == [1_000]
    assert books.violations() == []


# -- shape -----------------------------------------------------------------------------------------

def _legs(books: Books, n: int) -> tuple[L.Leg, ...]:
    return tuple(Leg(books.bank, books.shop, 1) for _ in range(n))


@pytest.mark.parametrize(("make", "code"), [
    (lambda b: Entry("k", (Leg(b.alice, b.shop, 0),)), E.INVALID_AMOUNT),
    (lambda b: Entry("k", (Leg(b.alice, b.shop, -100),)), E.INVALID_AMOUNT),
    (lambda b: Entry("k", (Leg(b.alice, b.shop, 1.0),)), E.INVALID_AMOUNT),  # type: ignore[arg-type]
    (lambda b: Entry("k", (Leg(b.alice, b.shop, True),)), E.INVALID_AMOUNT),
    (lambda b: Entry("k", (Leg(b.alice, b.shop, "100"),)), E.INVALID_AMOUNT),  # type: ignore[arg-type]
    (lambda b: Entry("k", (Leg(b.bank, b.shop, AMOUNT_MAX + 1),)), E.AMOUNT_TOO_LARGE),
    (lambda b: Entry("k", (Leg(b.alice, b.alice, 100),)), E.ACCOUNTS_MUST_BE_DIFFERENT),
    (lambda b: Entry("k", ()), E.ENTRY_EMPTY),
    (lambda b: Entry("k", (), kind=PENDING), E.ENTRY_EMPTY),
    (lambda b: Entry("k", _legs(b, LEGS_PER_ENTRY_MAX + 1)), E.ENTRY_TOO_LARGE),
    (lambda b: Entry("k" * (KEY_LENGTH_MAX + 1), _legs(b, 1)), E.INVALID_REQUEST),
    (lambda b: Entry("", _legs(b, 1)), E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), pending_id=1), E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), timeout_s=60), E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), kind=PENDING, timeout_s=-1), E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), kind=PENDING, timeout_s=90 * 86_400 + 1),
     E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), kind=PENDING, reverses_id=1), E.INVALID_REQUEST),
    (lambda b: Entry("k", kind=POST), E.INVALID_REQUEST),
    (lambda b: Entry("k", _legs(b, 1), kind=VOID, pending_id=1), E.INVALID_REQUEST),
    (lambda b: Entry("k", kind=POST, pending_id=1, amounts=(-1,)), E.INVALID_AMOUNT),
    (lambda b: Entry("k", kind=POST, pending_id=1, amounts=(1.5,)), E.INVALID_AMOUNT),  # type: ignore[arg-type]
    (lambda b: Entry("k", (Leg(b.alice, 999_999, 100),)), E.ACCOUNT_NOT_FOUND),
    (lambda b: Entry("k", (Leg(b.bank, b.usd_wallet, 100),)), E.CURRENCY_MISMATCH),
])
def test_a_malformed_entry_is_refused_with_its_code(books: Books,
                                                    make: Callable[[Books], Entry],
                                                    code: ErrorCode) -> None:
    before = books.account(books.shop)
    bad = make(books)
    good = Entry("good", (Leg(books.alice, books.shop, 100),))
    assert errors(books.run(bad, good)) == [code, None]
    assert books.account(books.shop).posting_count == before.posting_count + 1
    assert books.violations() == []


def test_the_boundaries_where_valid_becomes_invalid_are_inside(books: Books) -> None:
    assert books.one(Entry("k" * KEY_LENGTH_MAX, _legs(books, LEGS_PER_ENTRY_MAX))).ok
    assert books.one(Entry("max", (Leg(books.bank, books.shop, AMOUNT_MAX),))).ok
    assert books.balances(books.shop) == [AMOUNT_MAX + LEGS_PER_ENTRY_MAX]
    assert books.violations() == []


def test_dollars_move_between_dollar_accounts_only(books: Books) -> None:
    results = books.run(
        Entry("usd-1", (Leg(books.usd_bank, books.usd_wallet, 5_000),)),
        Entry("usd-2", (Leg(books.usd_wallet, books.shop, 100),)),
        # One entry may move two currencies, each leg within its own currency.
        Entry("fx", (Leg(books.usd_wallet, books.usd_bank, 1_000),
                     Leg(books.bank, books.alice, 7_000))),
    )
    assert errors(results) == [None, E.CURRENCY_MISMATCH, None]
    assert books.balances(books.usd_wallet, books.usd_bank, books.alice) == [
        4_000, -4_000, OPENING_TOPUP + 7_000]
    assert books.violations() == []


# -- account status and limits -------------------------------------------------------------------

def test_a_frozen_account_neither_pays_nor_receives_until_unfrozen(books: Books) -> None:
    assert books.set_status(books.alice, L.AccountStatus.FROZEN).status == "frozen"
    results = books.run(
        Entry("pay", (Leg(books.alice, books.shop, 100),)),
        Entry("topup", (Leg(books.bank, books.alice, 100),)),
        Entry("hold", (Leg(books.alice, books.shop, 100),), kind=PENDING),
        Entry("other", (Leg(books.bank, books.bob, 100),)),
    )
    assert errors(results) == [E.ACCOUNT_FROZEN] * 3 + [None]
    books.set_status(books.alice, L.AccountStatus.OPEN)
    assert books.one(Entry("pay", (Leg(books.alice, books.shop, 100),))).ok
    assert books.balances(books.alice) == [OPENING_TOPUP - 100]
    assert books.violations() == []


def test_a_closed_account_stays_closed(books: Books) -> None:
    with pytest.raises(DomainError) as exc:
        books.set_status(books.alice, L.AccountStatus.CLOSED)
    assert exc.value.code == E.INVALID_STATE_TRANSITION
    assert books.set_status(books.bob, L.AccountStatus.FROZEN).status == "frozen"
    assert books.set_status(books.bob, L.AccountStatus.CLOSED).status == "closed"
    assert errors(books.run(Entry("gift", (Leg(books.alice, books.bob, 100),)),
                            Entry("out", (Leg(books.bob, books.alice, 100),)))) == [
        E.ACCOUNT_CLOSED, E.ACCOUNT_CLOSED]
    for status in (L.AccountStatus.OPEN, L.AccountStatus.FROZEN):
        with pytest.raises(DomainError) as exc:
            books.set_status(books.bob, status)
        assert exc.value.code == E.ACCOUNT_CLOSED
    assert books.account(books.bob).status == "closed"
    assert books.violations() == []


def test_an_account_with_a_hold_cannot_close(books: Books) -> None:
    hold_id = books.ok(Entry("h", (Leg(books.bank, books.bob, 10),), kind=PENDING))
    with pytest.raises(DomainError) as exc:
        books.set_status(books.bob, L.AccountStatus.CLOSED)
    assert exc.value.code == E.INVALID_STATE_TRANSITION
    books.ok(Entry("v", kind=VOID, pending_id=hold_id))
    assert books.set_status(books.bob, L.AccountStatus.CLOSED).status == "closed"


def test_a_wallet_spends_exactly_its_balance_and_not_one_fen_more(books: Books) -> None:
    results = books.run(
        Entry("pay-1", (Leg(books.alice, books.shop, OPENING_TOPUP + 1),)),
        Entry("pay-2", (Leg(books.alice, books.shop, OPENING_TOPUP),)),
        Entry("pay-3", (Leg(books.alice, books.shop, 1),)),
    )
    assert errors(results) == [E.INSUFFICIENT_FUNDS, None, E.INSUFFICIENT_FUNDS]
    assert books.balances(books.alice) == [0]
    assert books.violations() == []


def test_a_wallet_is_checked_on_the_net_of_a_multi_leg_entry(books: Books) -> None:
    # Bob has nothing, but receives as he pays within one atomic entry: the limit is checked on
    # the entry's net effect, so the order of the legs does not matter (Bob's first posting
    # records an intermediate balance of -3.00 inside the entry).
    assert books.one(Entry("relay", (Leg(books.bob, books.shop, 300),
                                     Leg(books.alice, books.bob, 300)))).ok
    assert books.one(Entry("relay-2", (Leg(books.bob, books.shop, 301),
                                       Leg(books.alice, books.bob, 300)))).error == (
        E.INSUFFICIENT_FUNDS)
    assert books.balances(books.bob, books.shop) == [0, 300]
    with reader(books.engine) as c:
        assert [p.balance_after for p in L.account_postings(c, books.bob)] == [-300, 0]
    assert books.violations() == []


def test_a_draw_only_account_never_has_more_credits_than_debits(books: Books) -> None:
    # A funder's exposure limit: 50.00 is granted (a debit) and may be drawn (credits) up to it.
    with writer(books.engine) as c:
        limit = L.open_account(c, books.clock.now(), "ins_bank", "exposure_limit",
                               flags=DRAW_ONLY).id
    results = books.run(
        Entry("draw-0", (Leg(books.bank, limit, 1),)),
        Entry("grant", (Leg(limit, books.bank, 5_000),)),
        Entry("draw-1", (Leg(books.bank, limit, 3_000),)),
        Entry("draw-2", (Leg(books.bank, limit, 2_001),), kind=PENDING),
        Entry("draw-3", (Leg(books.bank, limit, 2_000),), kind=PENDING),
        Entry("draw-4", (Leg(books.bank, limit, 1),)),
    )
    assert errors(results) == [E.CREDIT_LIMIT_EXCEEDED, None, None, E.CREDIT_LIMIT_EXCEEDED,
                               None, E.CREDIT_LIMIT_EXCEEDED]
    account = books.account(limit)
    assert (account.debits_posted, account.credits_posted, account.credits_pending) == (
        5_000, 3_000, 2_000)
    assert books.violations() == []


def test_an_institution_settlement_account_goes_negative(books: Books) -> None:
    books.ok(Entry("topup-bob", (Leg(books.bank, books.bob, 1_000_000),)))
    assert books.balances(books.bank) == [-OPENING_TOPUP - 1_000_000]
    account = books.account(books.bank)
    assert account.available == account.balance < 0
    assert books.violations() == []


# -- holds -----------------------------------------------------------------------------------------

def _hold(books: Books, key: str, amount: int, *, timeout_s: int = 0) -> int:
    return books.ok(Entry(key, (Leg(books.alice, books.shop, amount),), kind=PENDING,
                          timeout_s=timeout_s, code="authorisation"))


def test_a_hold_reserves_without_moving(books: Books) -> None:
    hold_id = _hold(books, "auth-1", 6_000)
    alice, shop = books.account(books.alice), books.account(books.shop)
    assert (alice.balance, alice.available, alice.debits_pending) == (
        OPENING_TOPUP, OPENING_TOPUP - 6_000, 6_000)
    assert (shop.balance, shop.credits_pending, shop.posting_count) == (0, 6_000, 0)
    hold = books.hold(hold_id)
    assert (hold.status, hold.expires_at, hold.resolved_by_id) == (
        L.HoldStatus.PENDING, None, None)
    assert hold.legs == (Leg(books.alice, books.shop, 6_000),)
    assert books.entry(hold_id).postings == ()
    # The held money cannot be spent twice.
    assert errors(books.run(
        Entry("pay", (Leg(books.alice, books.bob, OPENING_TOPUP - 5_999),)),
        Entry("auth-2", (Leg(books.alice, books.bob, OPENING_TOPUP - 5_999),), kind=PENDING),
        Entry("pay-ok", (Leg(books.alice, books.bob, OPENING_TOPUP - 6_000),)),
    )) == [E.INSUFFICIENT_FUNDS, E.INSUFFICIENT_FUNDS, None]
    assert books.violations() == []


def test_posting_a_hold_in_full(books: Books) -> None:
    hold_id = _hold(books, "auth-1", 6_000)
    post_id = books.ok(Entry("capture-1", kind=POST, pending_id=hold_id, code="capture"))
    alice, shop = books.account(books.alice), books.account(books.shop)
    assert (alice.balance, alice.debits_pending) == (OPENING_TOPUP - 6_000, 0)
    assert (shop.balance, shop.credits_pending) == (6_000, 0)
    hold = books.hold(hold_id)
    assert (hold.status, hold.resolved_by_id) == (L.HoldStatus.POSTED, post_id)
    record = books.entry(post_id)
    assert (record.kind, record.pending_id) == (POST, hold_id)
    assert [p.amount for p in record.postings] == [-6_000, 6_000]
    assert books.violations() == []


def test_posting_part_of_a_hold_releases_the_rest(books: Books) -> None:
    hold_id = books.ok(Entry("auth", (Leg(books.alice, books.shop, 6_000),
                                      Leg(books.alice, books.fee, 100)), kind=PENDING))
    results = books.run(
        Entry("too-much", kind=POST, pending_id=hold_id, amounts=(6_001, 100)),
        Entry("too-few", kind=POST, pending_id=hold_id, amounts=(6_000,)),
        Entry("capture", kind=POST, pending_id=hold_id, amounts=(4_500, 0)),
    )
    assert errors(results) == [E.HOLD_AMOUNT_EXCEEDED, E.INVALID_REQUEST, None]
    alice = books.account(books.alice)
    assert (alice.balance, alice.available, alice.debits_pending) == (
        OPENING_TOPUP - 4_500, OPENING_TOPUP - 4_500, 0)
    assert books.balances(books.shop, books.fee) == [4_500, 0]
    assert books.account(books.fee).credits_pending == 0
    assert [p.leg_no for p in books.entry(results[2].entry_id or 0).postings] == [0, 0]
    assert books.violations() == []


def test_voiding_a_hold_moves_nothing(books: Books) -> None:
    hold_id = _hold(books, "auth-1", 6_000)
    void_id = books.ok(Entry("cancel-1", kind=VOID, pending_id=hold_id))
    alice = books.account(books.alice)
    assert (alice.balance, alice.available, alice.debits_pending) == (
        OPENING_TOPUP, OPENING_TOPUP, 0)
    assert books.account(books.shop).credits_pending == 0
    assert books.hold(hold_id).status == L.HoldStatus.VOIDED
    assert books.hold(hold_id).resolved_by_id == void_id
    assert books.entry(void_id).postings == ()
    assert books.violations() == []


def test_a_hold_resolves_once(books: Books) -> None:
    posted, voided = _hold(books, "auth-1", 1_000), _hold(books, "auth-2", 2_000)
    books.ok(Entry("capture-1", kind=POST, pending_id=posted))
    books.ok(Entry("cancel-2", kind=VOID, pending_id=voided))
    results = books.run(
        Entry("capture-1b", kind=POST, pending_id=posted),
        Entry("cancel-1", kind=VOID, pending_id=posted),
        Entry("capture-2", kind=POST, pending_id=voided),
        Entry("cancel-2b", kind=VOID, pending_id=voided),
        Entry("capture-x", kind=POST, pending_id=999_999),
        Entry("capture-p", kind=POST, pending_id=books.ok(Entry(
            "plain", (Leg(books.alice, books.shop, 1),)))),
    )
    assert errors(results) == [E.HOLD_ALREADY_POSTED, E.HOLD_ALREADY_POSTED,
                               E.HOLD_ALREADY_VOIDED, E.HOLD_ALREADY_VOIDED,
                               E.HOLD_NOT_FOUND, E.HOLD_NOT_FOUND]
    # Within one batch too: the second capture sees the first.
    third = _hold(books, "auth-3", 500)
    assert errors(books.run(Entry("c3", kind=POST, pending_id=third),
                            Entry("v3", kind=VOID, pending_id=third))) == [
        None, E.HOLD_ALREADY_POSTED]
    assert books.balances(books.shop) == [1_000 + 1 + 500]
    assert books.violations() == []


def test_a_hold_expires(books: Books) -> None:
    hold_id = _hold(books, "auth-1", 6_000, timeout_s=600)
    keep_id = _hold(books, "auth-2", 1_000, timeout_s=3_600)
    forever_id = _hold(books, "auth-3", 100)
    books.clock.advance(timedelta(seconds=599))
    with writer(books.engine) as c:
        assert L.expire_holds(c, books.clock.now()) == 0
    books.clock.advance(timedelta(seconds=1))
    # Time is up even before the sweeper runs: it can no longer be captured.
    assert books.one(Entry("capture-1", kind=POST, pending_id=hold_id)).error == E.HOLD_EXPIRED
    with writer(books.engine) as c:
        assert L.expire_holds(c, books.clock.now()) == 1
        assert L.expire_holds(c, books.clock.now()) == 0
    hold = books.hold(hold_id)
    assert hold.status == L.HoldStatus.EXPIRED and hold.resolved_by_id is not None
    assert hold.expires_at == books.clock.now()
    alice = books.account(books.alice)
    assert (alice.balance, alice.debits_pending) == (OPENING_TOPUP, 1_100)
    assert books.account(books.shop).credits_pending == 1_100
    assert errors(books.run(Entry("capture-1", kind=POST, pending_id=hold_id),
                            Entry("cancel-1", kind=VOID, pending_id=hold_id),
                            Entry("capture-2", kind=POST, pending_id=keep_id))) == [
        E.HOLD_EXPIRED, E.HOLD_EXPIRED, None]
    books.clock.advance(timedelta(days=89))
    with writer(books.engine) as c:
        assert L.expire_holds(c, books.clock.now()) == 0
    assert books.hold(forever_id).status == L.HoldStatus.PENDING
    assert books.balances(books.alice, books.shop) == [OPENING_TOPUP - 1_000, 1_000]
    assert books.violations() == []


def test_a_frozen_account_keeps_its_holds_until_voided(books: Books) -> None:
    captured, voided = _hold(books, "auth-1", 1_000), _hold(books, "auth-2", 2_000)
    expiring = _hold(books, "auth-3", 3_000, timeout_s=60)
    books.set_status(books.alice, L.AccountStatus.FROZEN)
    books.clock.advance(timedelta(seconds=60))
    with writer(books.engine) as c:
        assert L.expire_holds(c, books.clock.now()) == 1
    assert errors(books.run(Entry("c1", kind=POST, pending_id=captured),
                            Entry("v2", kind=VOID, pending_id=voided))) == [
        E.ACCOUNT_FROZEN, None]
    assert books.hold(expiring).status == L.HoldStatus.EXPIRED
    assert books.account(books.alice).debits_pending == 1_000
    assert books.violations() == []


# -- reversals -----------------------------------------------------------------------------------

def test_a_reversal_swaps_every_leg_exactly_once(books: Books) -> None:
    pay_id = books.ok(Entry("pay-1", (Leg(books.alice, books.shop, 10_000),
                                      Leg(books.shop, books.fee, 60))))
    with writer(books.engine) as c:
        result = L.reverse(c, books.clock.now(), pay_id, "refund-1", memo="returned")
        assert result.ok and result.entry_id is not None
        again = L.reverse(c, books.clock.now(), pay_id, "refund-1", memo="returned")
        assert again == L.EntryResult(result.entry_id, None, replayed=True)
        with pytest.raises(DomainError) as exc:
            L.reverse(c, books.clock.now(), pay_id, "refund-2")
        assert exc.value.code == E.ALREADY_REVERSED
        with pytest.raises(DomainError) as exc:
            L.reverse(c, books.clock.now(), 999_999, "refund-3")
        assert exc.value.code == E.ENTRY_NOT_FOUND
    original, reversal = books.entry(pay_id), books.entry(result.entry_id)
    assert (reversal.reverses_id, reversal.code, reversal.memo) == (pay_id, "reversal",
                                                                    "returned")
    assert [(p.leg_no, p.account_id, p.amount) for p in original.postings] == [
        (0, books.alice, -10_000), (0, books.shop, 10_000),
        (1, books.shop, -60), (1, books.fee, 60)]
    assert [(p.leg_no, p.account_id, p.amount) for p in reversal.postings] == [
        (0, books.shop, -10_000), (0, books.alice, 10_000),
        (1, books.fee, -60), (1, books.shop, 60)]
    assert books.balances(books.alice, books.shop, books.fee) == [OPENING_TOPUP, 0, 0]
    assert books.violations() == []


def test_a_reversal_must_match_and_must_be_affordable(books: Books) -> None:
    pay_id = books.ok(Entry("pay-1", (Leg(books.alice, books.shop, 1_000),)))
    gift_id = books.ok(Entry("gift", (Leg(books.alice, books.bob, 500),)))
    hold_id = _hold(books, "auth", 100)
    books.ok(Entry("spend", (Leg(books.bob, books.shop, 500),)))
    swapped = (Leg(books.shop, books.alice, 1_000),)
    results = books.run(
        Entry("r-wrong", (Leg(books.shop, books.alice, 999),), reverses_id=pay_id),
        Entry("r-missing", swapped, reverses_id=999_999),
        Entry("r-hold", (Leg(books.shop, books.alice, 100),), reverses_id=hold_id),
        Entry("r-poor", (Leg(books.bob, books.alice, 500),), reverses_id=gift_id),
        Entry("r-ok", swapped, reverses_id=pay_id),
        Entry("r-twice", swapped, reverses_id=pay_id),
    )
    assert errors(results) == [E.INVALID_REQUEST, E.ENTRY_NOT_FOUND, E.ENTRY_NOT_FOUND,
                               E.INSUFFICIENT_FUNDS, None, E.ALREADY_REVERSED]
    with writer(books.engine) as c, pytest.raises(DomainError) as exc:
        L.reverse(c, books.clock.now(), hold_id, "r-hold-2")
    assert exc.value.code == E.ENTRY_NOT_FOUND
    assert books.violations() == []


def test_a_refused_reversal_does_not_count_as_the_reversal(books: Books) -> None:
    gift_id = books.ok(Entry("gift", (Leg(books.alice, books.bob, 500),)))
    books.ok(Entry("spend", (Leg(books.bob, books.shop, 500),)))
    back = (Leg(books.bob, books.alice, 500),)
    results = books.run(
        Entry("undo-1", back, reverses_id=gift_id),  # Bob has spent it
        Entry("refill", (Leg(books.shop, books.bob, 500),)),
        Entry("undo-2", back, reverses_id=gift_id),
    )
    assert errors(results) == [E.INSUFFICIENT_FUNDS, None, None]
    assert books.entry(results[2].entry_id or 0).reverses_id == gift_id
    assert books.balances(books.alice, books.bob) == [OPENING_TOPUP, 0]
    assert books.violations() == []


def test_a_captured_hold_reverses_what_was_captured(books: Books) -> None:
    hold_id = _hold(books, "auth", 6_000)
    capture_id = books.ok(Entry("capture", kind=POST, pending_id=hold_id, amounts=(2_500,)))
    with writer(books.engine) as c:
        assert L.reverse(c, books.clock.now(), capture_id, "refund").ok
    assert books.balances(books.alice, books.shop) == [OPENING_TOPUP, 0]
    assert books.violations() == []


# -- history ---------------------------------------------------------------------------------------

def test_balance_at_past_instants(books: Books) -> None:
    opened = books.clock.now()
    books.clock.advance(timedelta(hours=1))
    books.ok(Entry("pay-1", (Leg(books.alice, books.shop, 3_000),)))
    paid = books.clock.now()
    books.clock.advance(timedelta(hours=1))
    books.ok(Entry("pay-2", (Leg(books.alice, books.shop, 4_000),)))
    _hold(books, "auth", 1_000)  # holds are not balances
    with reader(books.engine) as c:
        def at(account_id: int, when: object) -> int:
            return L.balance_at(c, account_id, when)  # type: ignore[arg-type]

        assert at(books.alice, opened - timedelta(microseconds=1)) == 0
        assert at(books.alice, opened) == OPENING_TOPUP
        assert at(books.alice, paid - timedelta(microseconds=1)) == OPENING_TOPUP
        assert at(books.alice, paid) == OPENING_TOPUP - 3_000
        assert at(books.alice, paid + timedelta(minutes=59)) == OPENING_TOPUP - 3_000
        assert at(books.alice, books.clock.now()) == OPENING_TOPUP - 7_000
        assert at(books.shop, paid) == 3_000
        assert at(books.bob, books.clock.now()) == 0
    assert books.violations() == []


def test_account_postings_page_by_page(books: Books) -> None:
    for i in range(1, 8):
        books.ok(Entry(f"pay-{i}", (Leg(books.alice, books.shop, 100 * i),)))
    pages: list[list[L.Posting]] = []
    with reader(books.engine) as c:
        cursor = 0
        while page := L.account_postings(c, books.alice, after_seq=cursor, limit=3):
            pages.append(page)
            cursor = page[-1].account_seq
        everything = L.account_postings(c, books.alice, limit=1_000)
        with pytest.raises(AssertionError):
            L.account_postings(c, books.alice, limit=1_001)
    assert [len(p) for p in pages] == [3, 3, 2]
    flat = [p for page in pages for p in page]
    assert flat == everything
    assert [p.account_seq for p in flat] == list(range(1, 9))
    running = 0
    for p in flat:
        running += p.amount
        assert p.balance_after == running
    assert running == OPENING_TOPUP - 2_800 == books.account(books.alice).balance
    assert books.violations() == []


# -- a day of business, then verify --------------------------------------------------------------

def test_a_day_of_business_leaves_the_books_balanced(books: Books) -> None:
    b = books
    b.ok(Entry("topup-bob", (Leg(b.bank, b.bob, 5_000),)))
    pay = b.ok(Entry("pay-1", (Leg(b.alice, b.shop, 3_000), Leg(b.shop, b.fee, 18),
                               Leg(b.fee, b.sp, 4))))
    auth = _hold(b, "auth-1", 2_000, timeout_s=60)
    auth2 = _hold(b, "auth-2", 1_000)
    b.run(Entry("c1", kind=POST, pending_id=auth2, amounts=(400,)),
          Entry("bad", (Leg(b.bob, b.shop, 99_999),)),
          Entry("l1", (Leg(b.bob, b.shop, 100),), linked=True),
          Entry("l2", (Leg(b.bob, b.bob, 100),)))
    b.clock.advance(timedelta(minutes=5))
    with writer(b.engine) as c:
        L.expire_holds(c, b.clock.now())
        L.reverse(c, b.clock.now(), pay, "refund-1")
    b.run(Entry("usd", (Leg(b.usd_bank, b.usd_wallet, 77),)))
    assert b.hold(auth).status == L.HoldStatus.EXPIRED
    assert b.balances(b.alice, b.bob, b.shop, b.fee, b.sp) == [
        OPENING_TOPUP - 400, 5_000, 400, 0, 0]
    with reader(b.engine) as c:
        L.check_invariants(c)
    assert b.violations() == []


# -- verify notices tampering ---------------------------------------------------------------------

@pytest.fixture
def busy_books(books: Books) -> Books:
    """Books with postings on several accounts and one hold still pending."""
    books.ok(Entry("pay-1", (Leg(books.alice, books.shop, 3_000), Leg(books.shop, books.fee, 18))))
    books.ok(Entry("auth-1", (Leg(books.alice, books.shop, 1_000),), kind=PENDING))
    assert books.violations() == []
    return books


def codes_found(books: Books) -> set[str]:
    return {v.code for v in books.violations()}


def test_verify_notices_an_edited_account_total(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 "
                      "WHERE id = :id", id=busy_books.shop)
    assert codes_found(busy_books) == {"totals_mismatch", "currency_not_zero"}
    subjects = {v.subject for v in busy_books.violations() if v.code == "totals_mismatch"}
    assert subjects == {f"acc_{busy_books.shop}"}


def test_verify_notices_totals_that_balance_but_disagree_with_postings(
        busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_accounts SET credits_posted = credits_posted + 5, "
                      "debits_posted = debits_posted + 5 WHERE id = :id", id=busy_books.fee)
    assert codes_found(busy_books) == {"totals_mismatch"}


def test_verify_notices_a_wrong_posting_count(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_accounts SET posting_count = posting_count + 1 "
                      "WHERE id = :id", id=busy_books.alice)
    assert codes_found(busy_books) == {"totals_mismatch"}


def test_verify_notices_an_edited_posting_amount(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_postings SET amount = amount + 1 "
                      "WHERE account_id = :id AND account_seq = 1", id=busy_books.shop)
    assert {"entry_unbalanced", "totals_mismatch", "sequence_broken"} <= codes_found(busy_books)


def test_verify_notices_a_currency_that_no_longer_sums_to_zero(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_accounts SET currency = 'USD' WHERE id = :id",
                      id=busy_books.shop)
    found = busy_books.violations()
    assert {v.code for v in found} == {"currency_not_zero"}
    assert {v.subject for v in found} == {"CNY", "USD"}


def test_verify_notices_a_broken_running_balance(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_postings SET balance_after = balance_after - 1 "
                      "WHERE account_id = :id AND account_seq = 1", id=busy_books.alice)
    found = busy_books.violations()
    assert [(v.code, v.subject) for v in found] == [
        ("sequence_broken", f"acc_{busy_books.alice}")]


def test_verify_notices_a_gap_in_an_account_sequence(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_postings SET account_seq = 7 "
                      "WHERE account_id = :id AND account_seq = 2", id=busy_books.alice)
    assert codes_found(busy_books) == {"sequence_broken"}


def test_verify_notices_pending_counters_that_disagree_with_holds(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_hold_legs SET amount = amount - 1 WHERE leg_no = 0")
    found = busy_books.violations()
    assert {v.code for v in found} == {"pending_mismatch"}
    assert {v.subject for v in found} == {f"acc_{busy_books.alice}", f"acc_{busy_books.shop}"}


def test_verify_notices_a_hold_marked_voided_behind_the_ledger(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_holds SET status = :voided",
                      voided=int(L.HoldStatus.VOIDED))
    assert codes_found(busy_books) == {"pending_mismatch"}


def test_verify_notices_an_edited_pending_counter(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_accounts SET debits_pending = 0 WHERE id = :id",
                      id=busy_books.alice)
    assert codes_found(busy_books) == {"pending_mismatch", "currency_not_zero"}


@pytest.mark.parametrize("flag", [WALLET, DRAW_ONLY])
def test_verify_notices_a_broken_limit(busy_books: Books, flag: L.AccountFlags) -> None:
    # The bank is negative (debits exceed credits); Alice is positive (credits exceed debits).
    target = busy_books.bank if flag == WALLET else busy_books.alice
    busy_books.tamper("UPDATE ledger_accounts SET flags = :flags WHERE id = :id",
                      flags=int(flag), id=target)
    found = busy_books.violations()
    assert [(v.code, v.subject) for v in found] == [("limit_violated", f"acc_{target}")]


def test_verify_notices_a_leg_with_one_side_missing(busy_books: Books) -> None:
    busy_books.tamper("UPDATE ledger_postings SET side = 2 "
                      "WHERE account_id = :id AND account_seq = 1", id=busy_books.shop)
    assert codes_found(busy_books) == {"entry_unbalanced"}
    with reader(busy_books.engine) as c, pytest.raises(AssertionError):
        L.check_invariants(c)


def test_the_database_refuses_to_edit_or_delete_ledger_records(busy_books: Books) -> None:
    """Entries and postings are immutable in the database as well as in the code."""
    from sqlalchemy.exc import DBAPIError

    for sql in ("UPDATE ledger_postings SET amount = amount + 1",
                "DELETE FROM ledger_postings",
                "UPDATE ledger_entries SET memo = 'edited'",
                "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="immutable"):
            with writer(busy_books.engine) as c:
                assert c.execute(text("SELECT COUNT(*) FROM ledger_postings")).scalar_one()
                c.execute(text(sql))
    assert busy_books.violations() == []


# -- counters at the limit of their BIGINT columns ------------------------------------------------

def _fill(debit: int, credit: int, total: int, key: str, kind: L.EntryKind = L.EntryKind.POSTED
          ) -> list[Entry]:
    """Entries of up to 16 legs of at most ``AMOUNT_MAX`` each that move ``total`` in all."""
    amounts = [AMOUNT_MAX] * (total // AMOUNT_MAX) + ([total % AMOUNT_MAX] if total %
                                                     AMOUNT_MAX else [])
    return [Entry(f"{key}-{i}", tuple(Leg(debit, credit, a) for a in
                                      amounts[i:i + LEGS_PER_ENTRY_MAX]), kind=kind)
            for i in range(0, len(amounts), LEGS_PER_ENTRY_MAX)]


def _open(books: Books, owner: str) -> int:
    with writer(books.engine) as c:
        return L.open_account(c, books.clock.now(), owner, L.Purpose.SUSPENSE).id


def _counters(books: Books, *account_ids: int) -> list[tuple[int, int, int, int, int]]:
    return [(a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending,
             a.posting_count) for a in map(books.account, account_ids)]


def test_no_counter_passes_its_column(books: Books) -> None:
    """Each of the four counters fills to exactly 2^63 - 1; one fen more fails with the
    counter's code (as TigerBeetle's result codes), moves nothing, and fails alone."""
    top = COUNTER_MAX
    src, dst = _open(books, "big_src"), _open(books, "big_dst")
    pend_src, pend_dst = _open(books, "pend_src"), _open(books, "pend_dst")
    fill = _fill(src, dst, top - 5, "fill")
    legs = sum(len(e.legs) for e in fill) + 1
    assert errors(books.run(*fill)) == [None] * 577
    assert errors(books.run(*_fill(pend_src, pend_dst, top, "hold", PENDING))) == [None] * 577
    assert errors(books.run(Entry("to-the-top", (Leg(src, dst, 5),)),
                            Entry("one-more", (Leg(books.bank, dst, 1),)))) == [
        None, E.OVERFLOWS_CREDITS_POSTED]
    everyone = (books.bank, books.shop, src, dst, pend_src, pend_dst)
    before = _counters(books, *everyone)
    assert before[2:] == [(top, 0, 0, 0, legs), (0, top, 0, 0, legs),
                          (0, 0, top, 0, 0), (0, 0, 0, top, 0)]
    refused = books.run(
        Entry("o1", (Leg(src, books.shop, 1),)),
        Entry("o2", (Leg(books.bank, dst, 1),)),
        Entry("o3", (Leg(pend_src, books.shop, 1),), kind=PENDING),
        Entry("o4", (Leg(books.bank, pend_dst, 1),), kind=PENDING),
        Entry("o5", (Leg(src, books.shop, 1),), kind=PENDING),  # posted + pending debits
        Entry("o6", (Leg(books.bank, dst, 1),), kind=PENDING),  # posted + pending credits
        # the net of a multi-leg entry counts: in 1 and out 1 still passes the credits
        Entry("o7", (Leg(books.bank, dst, 1), Leg(dst, books.shop, 1))),
        Entry("fine", (Leg(dst, books.shop, 7),)),
    )
    assert errors(refused) == [E.OVERFLOWS_DEBITS_POSTED, E.OVERFLOWS_CREDITS_POSTED,
                               E.OVERFLOWS_DEBITS_PENDING, E.OVERFLOWS_CREDITS_PENDING,
                               E.OVERFLOWS_DEBITS, E.OVERFLOWS_CREDITS,
                               E.OVERFLOWS_CREDITS_POSTED, None]
    assert _counters(books, *everyone)[:2] == [before[0], (before[1][0], before[1][1] + 7,
                                                           0, 0, before[1][4] + 1)]
    # Posting a hold moves pending to posted: it fits wherever the hold did.
    with reader(books.engine) as c:
        hold_id = L.get_entry_by_key(c, "hold-0")
    assert hold_id is not None
    assert books.one(Entry("capture", kind=POST, pending_id=hold_id.id)).ok
    assert books.violations() == []


def test_one_call_raises_the_overflow_code(books: Books) -> None:
    src, dst = _open(books, "big_src"), _open(books, "big_dst")
    assert all(r.ok for r in books.run(*_fill(src, dst, COUNTER_MAX, "fill")))
    with writer(books.engine) as c, pytest.raises(DomainError) as exc:
        L.transfer(c, books.clock.now(), "too-much", books.bank, dst, 1)
    assert exc.value.code == E.OVERFLOWS_CREDITS_POSTED
    assert books.account(dst).credits_posted == COUNTER_MAX


# -- keys the ledger keeps for itself -------------------------------------------------------------

def test_clients_cannot_use_the_ledgers_own_keys(books: Books) -> None:
    hold_id = _hold(books, "auth", 1_000, timeout_s=60)
    before = books.account(books.alice)
    results = books.run(
        Entry(f"{SYSTEM_KEY_PREFIX}expire:{hold_id}", kind=VOID, pending_id=hold_id),
        Entry(f"{SYSTEM_KEY_PREFIX}x", (Leg(books.alice, books.shop, 1),)),
        # Keys that only look like the ledger's are the client's own.
        Entry(f"expire:{hold_id}", (Leg(books.alice, books.shop, 1),)),
        Entry(f"x{SYSTEM_KEY_PREFIX}", (Leg(books.alice, books.shop, 1),)),
    )
    assert errors(results) == [E.KEY_RESERVED, E.KEY_RESERVED, None, None]
    with writer(books.engine) as c, pytest.raises(DomainError) as exc:
        L.transfer(c, books.clock.now(), f"{SYSTEM_KEY_PREFIX}1", books.alice, books.shop, 1)
    assert exc.value.code == E.KEY_RESERVED
    assert books.account(books.alice).balance == before.balance - 2
    assert books.hold(hold_id).status == L.HoldStatus.PENDING
    books.clock.advance(timedelta(seconds=60))
    with writer(books.engine) as c:
        assert L.expire_holds(c, books.clock.now()) == 1
    expired = books.hold(hold_id)
    assert expired.status == L.HoldStatus.EXPIRED and expired.resolved_by_id is not None
    assert books.entry(expired.resolved_by_id).key == f"{SYSTEM_KEY_PREFIX}expire:{hold_id}"
    assert books.violations() == []


# -- PostgreSQL: two processes racing for one new key ---------------------------------------------

@dataclass(frozen=True)
class Raced:
    first: L.EntryResult
    second: L.EntryResult


def _race_on_postgres(books: Books, first: Entry, second: Entry) -> Raced:
    """``first`` is written and not yet committed when another database session (another
    process's committer) writes ``second``; ``first`` commits once ``second`` waits for it."""
    other = make_engine(books.engine.url.render_as_string(hide_password=False))
    outcome: list[L.EntryResult] = []
    try:
        with writer(books.engine) as a:
            (first_result,) = L.create_entries(a, books.clock.now(), [first])
            thread = threading.Thread(target=lambda: outcome.extend(
                _write_in(other, books, second)))
            thread.start()
            with books.engine.connect() as watch:
                for _ in range(RACE_POLLS_MAX):
                    waiting = watch.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'")).scalar_one()
                    watch.rollback()  # a transaction sees one snapshot of the statistics
                    if waiting:
                        break
                    threading.Event().wait(0.01)
                else:
                    raise AssertionError("the second writer never waited for the first")
        thread.join(WAIT_S)
        assert not thread.is_alive()
    finally:
        other.dispose()
    (second_result,) = outcome
    return Raced(first_result, second_result)


def _write_in(engine: Engine, books: Books, entry: Entry) -> list[L.EntryResult]:
    with writer(engine) as c:
        return L.create_entries(c, books.clock.now(), [entry])


@pytest.fixture
def pg_books(books: Books, db_kind: str) -> Books:
    if db_kind != "postgresql":
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE): this race cannot happen")
    return books


def test_racing_the_same_entry_replays_it(pg_books: Books) -> None:
    b = pg_books
    pay = Entry("pay-1", (Leg(b.alice, b.shop, 1_000),))
    raced = _race_on_postgres(b, pay, pay)
    assert raced.first.ok and not raced.first.replayed
    assert raced.second == L.EntryResult(raced.first.entry_id, None, replayed=True)
    assert b.balances(b.alice, b.shop) == [OPENING_TOPUP - 1_000, 1_000]
    assert b.violations() == []


def test_racing_one_key_with_other_content_is_refused(pg_books: Books) -> None:
    b = pg_books  # other accounts: the second waits on the key's index entry, not on a row
    raced = _race_on_postgres(b, Entry("k", (Leg(b.alice, b.shop, 1_000),)),
                              Entry("k", (Leg(b.usd_bank, b.usd_wallet, 5),)))
    assert raced.first.ok
    assert raced.second == L.EntryResult(raced.first.entry_id, E.EXISTS_WITH_DIFFERENT_FIELDS)
    assert b.account(b.usd_wallet).balance == 0
    assert b.violations() == []


def test_racing_two_reversals_of_one_entry_reverses_it_once(pg_books: Books) -> None:
    b = pg_books
    pay_id = b.ok(Entry("pay-1", (Leg(b.alice, b.shop, 1_000),)))
    back = (Leg(b.shop, b.alice, 1_000),)
    raced = _race_on_postgres(b, Entry("undo-1", back, reverses_id=pay_id),
                              Entry("undo-2", back, reverses_id=pay_id))
    assert raced.first.ok and raced.second.error == E.ALREADY_REVERSED
    assert b.balances(b.alice, b.shop) == [OPENING_TOPUP, 0]
    assert b.violations() == []


def test_entries_survive_migration_0012_down_and_up(books: Books) -> None:
    """0012 makes an entry's id SQLite's rowid and the reversal index partial: the entries are
    kept both ways, an entry is still reversed at most once, and the ledger still verifies."""
    from alembic import command
    from alembic.config import Config

    from lianjie.db import migrate

    pay_id = books.ok(Entry("pay", (Leg(books.alice, books.shop, 1_000),), memo="备注"))
    books.ok(Entry("back", (Leg(books.shop, books.alice, 1_000),), reverses_id=pay_id))
    books.ok(Entry("gift", (Leg(books.alice, books.bob, 300),)))

    def rows() -> list[tuple[object, ...]]:
        with books.engine.connect() as c:
            return [tuple(r) for r in c.execute(text(
                "SELECT id, key, kind, code, pending_id, reverses_id, fingerprint, memo,"
                " created_at FROM ledger_entries ORDER BY id"))]

    def declared() -> str:
        with books.engine.connect() as c:
            return str(c.execute(text("SELECT sql FROM sqlite_master "
                                      "WHERE name = 'ledger_entries'")).scalar_one())

    expected = rows()
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(L.__file__).parents[1] / "migrations"))
    with books.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011_clearing")
        conn.commit()
    assert rows() == expected
    if books.engine.dialect.name == "sqlite":
        assert "id BIGINT" in declared()
    migrate(books.engine)
    assert rows() == expected
    if books.engine.dialect.name == "sqlite":
        assert "id INTEGER" in declared()
        with books.engine.connect() as c:
            assert [r[0] for r in c.execute(text(
                "SELECT rowid FROM ledger_entries ORDER BY rowid"))] == [r[0] for r in expected]
    assert errors(books.run(Entry("back-2", (Leg(books.shop, books.alice, 1_000),),
                                  reverses_id=pay_id))) == [E.ALREADY_REVERSED]
    with pytest.raises(IntegrityError), writer(books.engine) as c:  # and the index refuses it
        c.execute(text("INSERT INTO ledger_entries (id, key, kind, code, reverses_id,"
                       " fingerprint, created_at) VALUES (99, 'x', 0, 't', :r, :fp, 0)"),
                  {"r": pay_id, "fp": b"0" * 16})
    books.ok(Entry("after", (Leg(books.alice, books.bob, 1),)))
    assert books.violations() == []


def test_rows_in_reads_on_the_driver_in_the_transaction(books: Books) -> None:
    """``db.rows_in`` (the ledger's reads) runs below SQLAlchemy: it sees the transaction's own
    uncommitted rows, returns plain tuples, and raises driver errors as SQLAlchemy's."""
    from sqlalchemy.exc import DBAPIError

    from lianjie.db import rows_in

    sql = "SELECT id, currency FROM ledger_accounts WHERE owner_id = ? AND id {in} ORDER BY id"
    with writer(books.engine) as c:
        opened = L.open_account(c, books.clock.now(), "late", L.Purpose.WALLET, "CNY")
        found = rows_in(c, sql, ("late",), [books.alice, opened.id, 10**12], "bigint",
                        chunk_max=1)
        assert found == [(opened.id, "CNY")]
        with pytest.raises(DBAPIError):
            rows_in(c, "SELECT nothing FROM ledger_accounts WHERE id {in}", (), [1], "bigint")
