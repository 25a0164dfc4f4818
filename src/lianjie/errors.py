"""Errors: one hierarchy for the whole product, and the stable codes of domain outcomes.

There are three kinds of error (see STYLE.md):

1. A programmer error is an ``assert``; the request fails with 500 and is logged loudly.
2. A domain outcome (insufficient funds, duplicate ``out_trade_no``, ...) is a ``DomainError``
   carrying an ``ErrorCode``. The API maps it to a 4xx Stripe-shaped error; nothing changed.
3. An infrastructure failure is one of the other ``LianjieError`` subclasses.

The tree::

    LianjieError
    ├── DomainError            a domain outcome with a stable code (4xx)
    ├── ConfigError            bad settings: database URL, missing key file, ...
    └── StorageError           the database failed or is not what we expect
        └── SchemaError        the database schema is not at the expected revision

Codes are appended and never renamed or reused: clients switch on them.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # request shape
    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNT_TOO_LARGE = "amount_too_large"
    UNKNOWN_CURRENCY = "unknown_currency"
    CURRENCY_MISMATCH = "currency_mismatch"
    # authentication and authorisation
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    # idempotency
    IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    # ledger
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CREDIT_LIMIT_EXCEEDED = "credit_limit_exceeded"
    ENTRY_EMPTY = "entry_empty"
    ENTRY_TOO_LARGE = "entry_too_large"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_CHAIN_OPEN = "linked_chain_open"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_ALREADY_POSTED = "hold_already_posted"
    HOLD_ALREADY_VOIDED = "hold_already_voided"
    HOLD_EXPIRED = "hold_expired"
    HOLD_AMOUNT_EXCEEDED = "hold_amount_exceeded"
    ENTRY_NOT_FOUND = "entry_not_found"
    ALREADY_REVERSED = "already_reversed"
    # parties
    PARTY_NOT_FOUND = "party_not_found"
    MERCHANT_NOT_APPROVED = "merchant_not_approved"
    MERCHANT_FROZEN = "merchant_frozen"
    NOT_YOUR_SUB_MERCHANT = "not_your_sub_merchant"
    FEE_RATE_OUT_OF_BOUNDS = "fee_rate_out_of_bounds"
    INVALID_STATE_TRANSITION = "invalid_state_transition"
    # orders and refunds
    DUPLICATE_OUT_TRADE_NO = "duplicate_out_trade_no"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_CLOSED = "order_closed"
    ORDER_EXPIRED = "order_expired"
    ORDER_ALREADY_PAID = "order_already_paid"
    ORDER_NOT_PAID = "order_not_paid"
    REFUND_EXCEEDS_PAID = "refund_exceeds_paid"
    DUPLICATE_OUT_REFUND_NO = "duplicate_out_refund_no"
    QR_CODE_NOT_FOUND = "qr_code_not_found"
    INVALID_EXPIRY = "invalid_expiry"
    # wallets
    WALLET_NOT_FOUND = "wallet_not_found"
    SAME_WALLET = "same_wallet"
    # marketing
    GROUP_NOT_FOUND = "group_not_found"
    NOT_IN_GROUP = "not_in_group"
    RED_PACKET_NOT_FOUND = "red_packet_not_found"
    RED_PACKET_EXPIRED = "red_packet_expired"
    RED_PACKET_EMPTY = "red_packet_empty"
    ALREADY_GRABBED = "already_grabbed"
    INVALID_SHARES = "invalid_shares"
    CAMPAIGN_NOT_FOUND = "campaign_not_found"
    CAMPAIGN_NOT_ACTIVE = "campaign_not_active"
    CAMPAIGN_BUDGET_EXHAUSTED = "campaign_budget_exhausted"
    PER_PERSON_LIMIT_REACHED = "per_person_limit_reached"
    COUPON_NOT_FOUND = "coupon_not_found"
    COUPON_EXPIRED = "coupon_expired"
    COUPON_ALREADY_USED = "coupon_already_used"
    COUPON_NOT_APPLICABLE = "coupon_not_applicable"
    COUPON_SOLD_OUT = "coupon_sold_out"
    NOT_ELIGIBLE = "not_eligible"
    SEGMENT_NOT_FOUND = "segment_not_found"
    INVALID_RULE = "invalid_rule"
    # risk
    RISK_DECLINED = "risk_declined"
    RISK_REVIEW_PENDING = "risk_review_pending"
    RISK_RULE_INVALID = "risk_rule_invalid"
    RISK_MODEL_INVALID = "risk_model_invalid"
    RISK_CASE_NOT_FOUND = "risk_case_not_found"
    RISK_CASE_CLAIMED = "risk_case_claimed"
    RISK_CASE_CLOSED = "risk_case_closed"
    UNTRUSTED_CLIENT_CONTEXT = "untrusted_client_context"
    # clearing
    BUSINESS_DAY_NOT_OVER = "business_day_not_over"
    DAY_ALREADY_SEALED = "day_already_sealed"
    NOT_LOGGED_YET = "not_logged_yet"
    INVALID_FILE = "invalid_file"
    DUPLICATE_FILE = "duplicate_file"
    RECON_ITEM_NOT_FOUND = "recon_item_not_found"
    INVALID_PROOF = "invalid_proof"
    INVALID_SIGNATURE = "invalid_signature"
    # ledger: an account counter would pass its BIGINT column (TigerBeetle's result codes),
    # and idempotency keys the ledger keeps for its own entries
    OVERFLOWS_DEBITS_PENDING = "overflows_debits_pending"
    OVERFLOWS_CREDITS_PENDING = "overflows_credits_pending"
    OVERFLOWS_DEBITS_POSTED = "overflows_debits_posted"
    OVERFLOWS_CREDITS_POSTED = "overflows_credits_posted"
    OVERFLOWS_DEBITS = "overflows_debits"
    OVERFLOWS_CREDITS = "overflows_credits"
    KEY_RESERVED = "key_reserved"
    # credit
    PRODUCT_NOT_FOUND = "product_not_found"
    INVALID_PRODUCT = "invalid_product"
    INSUFFICIENT_HISTORY = "insufficient_history"
    AMOUNT_ABOVE_LIMIT = "amount_above_limit"
    AMOUNT_BELOW_MINIMUM = "amount_below_minimum"
    APPLICATION_ALREADY_OPEN = "application_already_open"
    APPLICATION_NOT_FOUND = "application_not_found"
    OFFER_NOT_APPROVED = "offer_not_approved"
    OFFER_EXPIRED = "offer_expired"
    FUNDER_LIMIT_EXCEEDED = "funder_limit_exceeded"
    LOAN_NOT_FOUND = "loan_not_found"
    LOAN_NOT_ACTIVE = "loan_not_active"
    REPAYMENT_EXCEEDS_OWED = "repayment_exceeds_owed"


class LianjieError(Exception):
    """Root of every error Lianjie raises on purpose."""


class DomainError(LianjieError):
    """A domain outcome: the request was understood and refused; nothing changed."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.param = param


class ConfigError(LianjieError):
    """Settings that cannot work (a bad database URL, an unreadable key file)."""


class StorageError(LianjieError):
    """The database failed or is not in the state the code expects."""


class SchemaError(StorageError):
    """The database schema is not at the revision this code needs."""
