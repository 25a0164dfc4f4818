"""Merchant credit: features from payment history, scores, 310 decisions, loan products funded
pro rata by the platform and partner institutions, schedules, daily accrual, repayment from
receipts, delinquency, write-off and recoveries.

Money moves only through the ledger; each funder's share lives in ledger accounts it owns.
"""

from lianjie.credit.daily import refresh as refresh_daily
from lianjie.credit.eod import STEPS, receipts_holdback, require_day_over, run_end_of_day
from lianjie.credit.features import FEATURES
from lianjie.credit.features import compute as compute_features
from lianjie.credit.features import for_merchant as merchant_features
from lianjie.credit.loans import (
    Application,
    bucket,
    do_accept,
    do_apply,
    do_drawdown,
    do_repay,
    do_write_off,
    get_application,
    list_loans,
    owed,
    position,
    require_application,
    require_loan,
    risk_review,
)
from lianjie.credit.products import (
    Funder,
    Product,
    do_create_product,
    do_set_funder_limit,
    funder_limit,
    get_product,
    list_products,
    require_product,
)
from lianjie.credit.vintage import vintage_curves

__all__ = [
    "FEATURES",
    "STEPS",
    "Application",
    "Funder",
    "Product",
    "bucket",
    "compute_features",
    "do_accept",
    "do_apply",
    "do_create_product",
    "do_drawdown",
    "do_repay",
    "do_set_funder_limit",
    "do_write_off",
    "funder_limit",
    "get_application",
    "get_product",
    "list_loans",
    "list_products",
    "merchant_features",
    "owed",
    "position",
    "receipts_holdback",
    "refresh_daily",
    "require_application",
    "require_day_over",
    "require_loan",
    "require_product",
    "risk_review",
    "run_end_of_day",
    "vintage_curves",
]
