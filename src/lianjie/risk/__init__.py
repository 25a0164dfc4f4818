"""Risk: a decision on every money-moving request, before anything is posted.

Features from the decision log (velocity, history, relationships), rules in CEL, a LightGBM
model, review cases over ledger holds, and backtests. See ``engine`` for ``decide``'s contract.
"""

from lianjie.risk.cases import (
    Case,
    case_payload,
    do_claim,
    do_decide,
    do_expire_cases,
    get_case,
    list_cases,
    open_case,
    register_resolver,
)
from lianjie.risk.engine import (
    Batch,
    Decision,
    RiskConfig,
    RiskDeclined,
    config_of,
    configure,
    decide,
    decide_many,
)
from lianjie.risk.features import FEATURES, MODEL_FEATURES, Event
from lianjie.risk.rules import DEFAULT_RULES, Rule, RuleSet
from lianjie.risk.store import do_add_to_list, do_remove_from_list, list_entries

__all__ = [
    "DEFAULT_RULES",
    "FEATURES",
    "MODEL_FEATURES",
    "Batch",
    "Case",
    "Decision",
    "Event",
    "RiskConfig",
    "RiskDeclined",
    "Rule",
    "RuleSet",
    "case_payload",
    "config_of",
    "configure",
    "decide",
    "decide_many",
    "do_add_to_list",
    "do_claim",
    "do_decide",
    "do_expire_cases",
    "do_remove_from_list",
    "get_case",
    "list_cases",
    "list_entries",
    "open_case",
    "register_resolver",
]
