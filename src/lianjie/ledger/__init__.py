"""The ledger: accounts, multi-leg entries, holds, history and invariants.

The single write path for money. Every context expresses what it does to money as ledger
entries; no context updates a balance any other way. The ledger imports no other context.
"""

from lianjie.ledger.accounts import (
    FIND_ACCOUNTS_MAX,
    accounts_of,
    find_account,
    find_accounts,
    get_account,
    get_accounts,
    open_account,
    require_account,
    set_account_status,
)
from lianjie.ledger.api import expire_holds, post, refusal, reverse, transfer
from lianjie.ledger.batch import create_entries
from lianjie.ledger.history import (
    account_postings,
    balance_at,
    get_entry,
    get_entry_by_key,
    get_hold,
)
from lianjie.ledger.invariants import Violation, check_invariants, verify
from lianjie.ledger.model import (
    BATCH_ENTRIES_MAX,
    Account,
    AccountFlags,
    AccountStatus,
    Entry,
    EntryKind,
    EntryRecord,
    EntryResult,
    Hold,
    HoldStatus,
    Leg,
    Posting,
    Purpose,
)

__all__ = [
    "BATCH_ENTRIES_MAX",
    "FIND_ACCOUNTS_MAX",
    "Account",
    "AccountFlags",
    "AccountStatus",
    "Entry",
    "EntryKind",
    "EntryRecord",
    "EntryResult",
    "Hold",
    "HoldStatus",
    "Leg",
    "Posting",
    "Purpose",
    "Violation",
    "account_postings",
    "accounts_of",
    "balance_at",
    "check_invariants",
    "create_entries",
    "expire_holds",
    "find_account",
    "find_accounts",
    "get_account",
    "get_accounts",
    "get_entry",
    "get_entry_by_key",
    "get_hold",
    "open_account",
    "post",
    "refusal",
    "require_account",
    "reverse",
    "set_account_status",
    "transfer",
    "verify",
]
