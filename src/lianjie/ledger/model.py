"""Ledger records: accounts, entries and their legs, holds, postings, results.

An *entry* is what the ledger posts atomically: one or more *legs*, each moving an amount from a
debit account to a credit account of the same currency. Because every leg debits and credits the
same amount, postings sum to zero per currency by construction, and the database keeps that
shape (two postings per leg). A payment is one entry: consumer wallet to merchant, merchant to
platform fee, platform fee to the service provider's commission.

Entries come in four kinds, as TigerBeetle's transfers do: ``POSTED`` moves money now;
``PENDING`` places a hold (the amounts are reserved, not moved); ``POST_PENDING`` completes a
hold for all or part of each leg; ``VOID_PENDING`` releases it. Entries are immutable; a
correction is a new entry that ``reverses`` an earlier one.

All records are frozen dataclasses; the ledger never edits one in place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, IntFlag, StrEnum

from lianjie.errors import ErrorCode

KEY_LENGTH_MAX = 200
LEGS_PER_ENTRY_MAX = 16
BATCH_ENTRIES_MAX = 8190  # TigerBeetle's batch size, less the one it keeps for itself
HOLD_TIMEOUT_S_MAX = 90 * 86_400
# Each of an account's four counters is a BIGINT column. An entry that would carry one past it,
# or carry posted plus pending debits (or credits) past it, fails with an ``overflows_*`` code;
# posting a hold moves pending into posted, so it can never overflow.
COUNTER_MAX = 2**63 - 1
# Keys of the entries the ledger makes itself (a hold's expiry): refused in clients' entries,
# so a client's key never collides with one of them.
SYSTEM_KEY_PREFIX = "ledger:"


class AccountFlags(IntFlag):
    NONE = 0
    # A wallet: its debits (posted and pending) never exceed its credits, so it never goes
    # below zero. An institution's settlement account has neither flag and may go negative.
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    # An account that may only be drawn on, such as a funder's exposure limit.
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"  # no postings and no new holds until unfrozen
    CLOSED = "closed"  # final; only a zero-balance account with no pending amounts closes


class Purpose(StrEnum):
    """What an account is for. Appended, never renamed."""

    WALLET = "wallet"
    MERCHANT_PENDING = "merchant_pending"
    MERCHANT_AVAILABLE = "merchant_available"
    FEE_REVENUE = "fee_revenue"
    SP_COMMISSION = "sp_commission"
    INSTITUTION_SETTLEMENT = "institution_settlement"
    SUSPENSE = "suspense"
    ESCROW = "escrow"
    # marketing: both are opened with DEBITS_MUST_NOT_EXCEED_CREDITS, so neither goes below zero
    RED_PACKET = "red_packet"  # one per red packet: its money from sending to grabbing
    CAMPAIGN_BUDGET = "campaign_budget"  # one per campaign: its hard budget
    # credit: each funder (the platform or a partner institution) books its share of a loan in
    # accounts of its own. Principal and receivables are debit-balance (asset) accounts.
    LOAN_PRINCIPAL = "loan_principal"
    INTEREST_RECEIVABLE = "interest_receivable"
    INTEREST_INCOME = "interest_income"
    PENALTY_RECEIVABLE = "penalty_receivable"
    PENALTY_INCOME = "penalty_income"
    FEE_RECEIVABLE = "fee_receivable"
    FEE_INCOME = "fee_income"
    CREDIT_LOSS = "credit_loss"
    RECOVERY_INCOME = "recovery_income"


class EntryKind(IntEnum):
    POSTED = 0
    PENDING = 1
    POST_PENDING = 2
    VOID_PENDING = 3


class HoldStatus(IntEnum):
    PENDING = 0
    POSTED = 1
    VOIDED = 2
    EXPIRED = 3


@dataclass(frozen=True, slots=True)
class Leg:
    debit_account_id: int
    credit_account_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A request to the ledger. ``key`` is the client's idempotency key for this entry.

    - POSTED / PENDING: ``legs`` required; PENDING may set ``timeout_s`` (0: never expires).
    - POST_PENDING: ``pending_id`` names the hold; ``amounts`` (one per hold leg, each at most
      the held amount) posts part, ``None`` posts it all. The rest of the hold is released.
    - VOID_PENDING: ``pending_id`` names the hold.
    - ``linked``: this entry succeeds only if the next one in the batch does (and so on to the
      first entry without ``linked``), as TigerBeetle's linked events.
    - ``reverses_id``: this entry corrects an earlier posted entry (at most one reversal each).
    """

    key: str
    legs: tuple[Leg, ...] = ()
    code: str = "transfer"
    kind: EntryKind = EntryKind.POSTED
    pending_id: int | None = None
    amounts: tuple[int, ...] | None = None
    timeout_s: int = 0
    reverses_id: int | None = None
    linked: bool = False
    memo: str | None = None

    def fingerprint(self) -> bytes:
        """A digest of the content that an idempotent replay must match (not ``linked``).

        The digest is stored, so its text is fixed: ``repr((int(kind), code, [(debit, credit,
        amount), ...], pending_id, amounts, timeout_s, reverses_id, memo))``. A tuple's and a
        list's repr are their items' reprs joined by ", " (no trailing comma past one item),
        so the f-string below spells the same text without building the tuple and list first
        (a third of the cost; tests/test_ledger_lean.py checks it against the repr)."""
        legs = self.legs
        if len(legs) == 1:
            (leg,) = legs
            legs_text = f"[({leg.debit_account_id!r}, {leg.credit_account_id!r}, {leg.amount!r})]"
        else:
            legs_text = "[" + ", ".join([
                f"({leg.debit_account_id!r}, {leg.credit_account_id!r}, {leg.amount!r})"
                for leg in legs]) + "]"
        text = (f"({int(self.kind)!r}, {self.code!r}, {legs_text}, {self.pending_id!r},"
                f" {self.amounts!r}, {self.timeout_s!r}, {self.reverses_id!r}, {self.memo!r})")
        return hashlib.blake2b(text.encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class EntryResult:
    """The outcome of one entry in a batch: ``entry_id`` when it exists, else ``error``."""

    entry_id: int | None
    error: ErrorCode | None = None
    replayed: bool = False  # the key existed with the same content: the original entry

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    owner_id: str
    purpose: str
    currency: str
    flags: AccountFlags
    status: AccountStatus
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    posting_count: int
    created_at: datetime

    @property
    def balance(self) -> int:
        """Posted balance: credits less debits."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What can still be debited: the posted balance less pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Posting:
    entry_id: int
    leg_no: int
    account_id: int
    account_seq: int
    amount: int  # negative: debit; positive: credit
    balance_after: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    entry_id: int
    status: HoldStatus
    expires_at: datetime | None
    resolved_by_id: int | None
    legs: tuple[Leg, ...]


@dataclass(frozen=True, slots=True)
class EntryRecord:
    id: int
    key: str
    kind: EntryKind
    code: str
    pending_id: int | None
    reverses_id: int | None
    memo: str | None
    created_at: datetime
    postings: tuple[Posting, ...]
