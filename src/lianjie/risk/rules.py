"""Rules in CEL, versioned in the database, with the built-in default set.

A rule is a CEL expression over the features (``c_count_1h > 20 && new_device == 1``), never
Python ``eval``. CEL comes from ``common-expression-language``, Rust bindings of the ``cel``
crate: about 1 us an evaluation where the pure-Python ``cel-python`` takes about 250 us
(measured in ``benchmarks/risk.py``'s notes), which is the difference between 30 rules fitting
in a 5 ms budget or not.

Each rule has an action: ``block``, ``review`` or ``allow`` decide outright when it fires;
``score`` adds its ``weight`` to the score, which the rule set's ``review_score`` and
``block_score`` turn into an outcome. A ``shadow`` rule is evaluated and logged but never acts;
a disabled rule is not evaluated. A rule set is published whole as a new version: it is refused
(``risk_rule_invalid``) if any rule does not compile or names a feature that does not exist, and
then the active version stays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cel
import orjson
from sqlalchemy import Connection, func, select

from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import schema
from lianjie.risk.features import ALL_NAMES

ACTIONS = ("block", "review", "allow", "score")
RULES_PER_SET_MAX = 200
EXPRESSION_LENGTH_MAX = 2000
NAME_LENGTH_MAX = 64
REVIEW_SCORE_DEFAULT = 60.0
BLOCK_SCORE_DEFAULT = 100.0
# What running a CEL program raises when a rule fails on its input (a type mismatch, a missing
# key, an integer division by zero is a ``ZeroDivisionError``).
CEL_ERRORS = (RuntimeError, ValueError, TypeError, ArithmeticError)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    expression: str
    action: str = "score"
    weight: float = 0.0
    enabled: bool = True
    shadow: bool = False
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: int
    rules: tuple[Rule, ...]
    review_score: float = REVIEW_SCORE_DEFAULT
    block_score: float = BLOCK_SCORE_DEFAULT


@dataclass(frozen=True, slots=True)
class Compiled:
    rule: Rule
    program: Any  # cel.Program


def _refuse(message: str, param: str = "rules") -> DomainError:
    return DomainError(ErrorCode.RISK_RULE_INVALID, message, param)


def compile_rule(rule: Rule) -> Compiled:
    """Compile one rule, or refuse it with ``risk_rule_invalid`` saying why."""
    if not isinstance(rule.name, str) or not rule.name.strip() or \
            len(rule.name) > NAME_LENGTH_MAX:
        raise _refuse(f"a rule name must be 1 to {NAME_LENGTH_MAX} characters")
    if rule.action not in ACTIONS:
        raise _refuse(f"rule {rule.name!r}: action must be one of {', '.join(ACTIONS)}")
    if not isinstance(rule.expression, str) or not rule.expression.strip() or \
            len(rule.expression) > EXPRESSION_LENGTH_MAX:
        raise _refuse(f"rule {rule.name!r}: the expression must be 1 to "
                      f"{EXPRESSION_LENGTH_MAX} characters")
    try:
        program = cel.compile(rule.expression)
    except ValueError as exc:
        raise _refuse(f"rule {rule.name!r} does not compile: {exc}") from None
    unknown = sorted(set(program.variables()) - ALL_NAMES)
    if unknown:
        raise _refuse(f"rule {rule.name!r} names unknown features: {', '.join(unknown)}")
    return Compiled(rule, program)


def compile_set(rule_set: RuleSet) -> tuple[Compiled, ...]:
    if len(rule_set.rules) > RULES_PER_SET_MAX:
        raise _refuse(f"a rule set holds at most {RULES_PER_SET_MAX} rules")
    if len({r.name for r in rule_set.rules}) != len(rule_set.rules):
        raise _refuse("rule names must be unique in a set")
    if not 0 < rule_set.review_score <= rule_set.block_score:
        raise _refuse("need 0 < review_score <= block_score", "review_score")
    compiled = tuple(compile_rule(r) for r in rule_set.rules if r.enabled)
    context = cel.Context(_sample_features())
    for c in compiled:  # CEL is strictly typed: ``amount > 1.5`` fails on an int at run time
        try:
            result = c.program.execute(context)
        except CEL_ERRORS as exc:
            raise _refuse(f"rule {c.rule.name!r} does not evaluate: {exc}") from None
        if not isinstance(result, bool):
            raise _refuse(f"rule {c.rule.name!r} must be true or false, not {result!r}")
    return compiled



@dataclass(frozen=True, slots=True)
class Batch:
    """A compiled set prepared for deciding: every rule in one CEL program (a list of their
    results, so one call instead of one per rule) over a context of only the features the
    rules name. ``program`` is None when the set is empty or does not combine; then (and
    whenever the combined call fails: one rule's run-time error fails the whole list) the
    rules are run one by one, as they always were. ``context`` is kept and refilled for each
    decision (every variable is overwritten), a third cheaper than a new ``cel.Context``;
    ``lock`` guards it.

    ``fired`` remembers the rules that fired for the last ``FIRED_MEMO_MAX`` distinct inputs
    (``memo_key``): CEL has no side effects, so the same values always fire the same rules, and
    events of one kind repeat them (the grabs of a red packet differ in their share, and mostly
    not even in that). A hit costs about a tenth of running the program."""

    compiled: tuple[Compiled, ...]
    program: Any  # cel.Program or None
    variables: tuple[str, ...]
    context: Any = field(default_factory=cel.Context, compare=False)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    fired: dict[bytes, tuple[Rule, ...]] = field(default_factory=dict, compare=False)


FIRED_MEMO_MAX = 4096


def memo_key(values: tuple[Any, ...]) -> bytes | None:
    """The rules' input as a key that only equal inputs share, or None when it cannot be one.
    JSON tells an int from a float from a bool (``1``, ``1.0``, ``true``; Python's ``==``
    does not) and ``-0.0`` from ``0.0``, and writes a float so that it reads back exactly; it
    writes NaN, infinities and None alike (``null``), so an input with any of them (or the
    word in a string) is never remembered, nor one with an integer past 64 bits."""
    try:
        key = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return None
    return None if b"null" in key else key


def batch(compiled: tuple[Compiled, ...]) -> Batch:
    variables = sorted({v for c in compiled for v in c.program.variables()})
    program = None
    if compiled:
        # One rule per line: a ``//`` comment in a rule ends with its line, not the list.
        source = "[\n" + ",\n".join(f"(\n{c.rule.expression}\n)" for c in compiled) + "\n]"
        try:
            program = cel.compile(source)
        except (ValueError, RuntimeError, TypeError):
            program = None
    return Batch(compiled, program, tuple(variables))

def _sample_features() -> dict[str, Any]:
    """Features of an event with no history: the types every rule is checked against."""
    from lianjie.risk.features import Event, FeatureState

    now = datetime(2026, 1, 1, tzinfo=UTC)
    feats: dict[str, Any] = FeatureState().features(
        Event("payment", "x", "a", 1, "CNY", "b", "s", "d", "i", "other", now, now), now)
    feats.update({name: 0 for name in ALL_NAMES if name.endswith(("_blocked", "_allowed"))})
    return feats


def _r(name: str, expression: str, action: str = "score", weight: float = 0.0,
       description: str | None = None) -> Rule:
    return Rule(name, expression, action, weight, description=description)


# The built-in set (version 0), used until an operator publishes one. It lets ordinary traffic
# through: only lists decide outright, and the scored signals need to stack up to reach review.
DEFAULT_RULES: tuple[Rule, ...] = (
    _r("blocklisted_party", "actor_blocked == 1 || counterparty_blocked == 1", "block",
       description="the payer or the payee is on the block list"),
    _r("blocklisted_device", "device_blocked == 1 || ip_blocked == 1", "block",
       description="the device or IP is on the block list"),
    _r("allowlisted", "actor_allowed == 1", "allow", description="the payer is on the allow list"),
    _r("burst_1m", "c_count_1m >= 10", weight=30, description="ten or more in a minute"),
    _r("burst_1h", "c_count_1h >= 40", weight=25),
    _r("new_device_big", "new_device == 1 && amount >= 50000", weight=40,
       description="a new device moving 500 or more"),
    _r("new_device_drain", "new_device == 1 && c_count_1h >= 3 && is_payment == 0", weight=45),
    _r("amount_spike", "amount_vs_consumer_avg >= 20.0 && c_count_7d >= 5", weight=30),
    _r("merchant_spike", "amount_vs_merchant_avg >= 30.0 && m_count_7d >= 20", weight=20),
    _r("device_shared", "d_accounts >= 5", weight=30,
       description="five or more accounts on this device"),
    _r("device_farm", "device_group_size >= 10", weight=35),
    _r("ip_shared", "i_accounts_24h >= 20", weight=20),
    _r("probe_merchant", "m_small_count_1h >= 20 && amount <= 100", weight=40,
       description="many small probes at this merchant in the last hour"),
    _r("probe_device", "d_count_1h >= 15 && amount <= 100", weight=35),
    _r("loop_back", "loop_back == 1 && is_p2p == 1 && amount >= 10000", weight=35,
       description="money going back to who sent it"),
    _r("loop_ring", "loop_ring == 1 && amount >= 10000", weight=35),
    _r("young_merchant_new_payers", "counterparty_age_days >= 0.0 && "
       "counterparty_age_days < 3.0 && m_new_payers_today >= 15", weight=35),
    _r("young_account_big", "account_age_days >= 0.0 && account_age_days < 1.0 && "
       "amount >= 100000", weight=30),
    _r("withdraw_after_burst", "is_withdrawal == 1 && c_count_1h >= 5", weight=20),
    _r("night_big", "(hour < 5) && amount >= 200000", weight=15),
    _r("first_pair_big", "first_pair == 1 && amount >= 500000", weight=25),
    _r("sp_burst", "s_count_1m >= 2000", "score", 10, "a service provider's burst (watch)"),
    # Account takeover: a new device sending money out, to young accounts (mules).
    _r("new_device_outflow", "new_device == 1 && is_payment == 0 && amount >= 20000",
       weight=40),
    _r("to_young_account", "is_p2p == 1 && counterparty_age_days >= 0.0 && "
       "counterparty_age_days < 7.0 && amount >= 20000", weight=25),
    _r("young_shared_device_withdrawal", "is_withdrawal == 1 && account_age_days >= 0.0 && "
       "account_age_days < 7.0 && d_accounts >= 1 && amount >= 50000", weight=65,
       description="a young account withdrawing from a device others use"),
    # Cash-out rings: young accounts on shared devices paying a young merchant large amounts.
    _r("young_payer_shared_device", "account_age_days >= 0.0 && account_age_days < 7.0 && "
       "d_accounts >= 1 && amount >= 50000", weight=35),
    _r("young_merchant_big", "counterparty_age_days >= 0.0 && counterparty_age_days < 7.0 && "
       "is_payment == 1 && amount >= 50000 && m_new_payers_today >= 3", weight=30),
    # Collusion: large transfers going round.
    _r("loop_big", "(loop_back == 1 || loop_ring == 1) && is_p2p == 1 && amount >= 100000",
       weight=60, description="a large transfer that closes a loop within a week"),
    _r("p2p_large_new_pair", "is_p2p == 1 && first_pair == 1 && amount >= 200000", weight=20),
    # Device farms: brand-new accounts on a device several accounts share.
    _r("new_account_farm_device", "account_age_days >= 0.0 && account_age_days < 2.0 && "
       "d_accounts >= 3", weight=60),
)
DEFAULT_SET = RuleSet(0, DEFAULT_RULES)


def load_active(conn: Connection, version: int) -> RuleSet:
    if version == 0:
        return DEFAULT_SET
    head = conn.execute(select(schema.rule_sets).where(schema.rule_sets.c.version == version)
                        ).one()
    rows = conn.execute(select(schema.rules).where(schema.rules.c.version == version)
                        .order_by(schema.rules.c.name)).all()
    return RuleSet(version, tuple(Rule(r.name, r.expression, r.action, r.weight, r.enabled,
                                       r.shadow, r.description) for r in rows),
                   head.review_score, head.block_score)


def rule_from_json(raw: dict[str, Any]) -> Rule:
    """A rule from its JSON shape (API, CLI files), refused clearly when malformed."""
    if not isinstance(raw, dict):
        raise _refuse("each rule is an object")
    try:
        weight = float(raw.get("weight", 0.0))
    except (TypeError, ValueError):
        raise _refuse(f"rule {raw.get('name')!r}: weight must be a number") from None
    return Rule(name=raw.get("name", ""), expression=raw.get("expression", ""),
                action=raw.get("action", "score"), weight=weight,
                enabled=bool(raw.get("enabled", True)), shadow=bool(raw.get("shadow", False)),
                description=raw.get("description"))


def rule_json(rule: Rule) -> dict[str, Any]:
    return {"name": rule.name, "expression": rule.expression, "action": rule.action,
            "weight": rule.weight, "enabled": rule.enabled, "shadow": rule.shadow,
            "description": rule.description}


def do_publish(conn: Connection, now: datetime, rules: list[Rule], *,
               review_score: float = REVIEW_SCORE_DEFAULT,
               block_score: float = BLOCK_SCORE_DEFAULT, note: str | None = None,
               activate: bool = True) -> RuleSet:
    """Store ``rules`` as the next version (and make it active): all of it compiles, or none
    of it is stored."""
    candidate = RuleSet(0, tuple(rules), float(review_score), float(block_score))
    compile_set(candidate)
    version = int(conn.execute(select(func.coalesce(func.max(schema.rule_sets.c.version), 0))
                               ).scalar_one()) + 1
    conn.execute(schema.rule_sets.insert().values(
        version=version, note=note, review_score=candidate.review_score,
        block_score=candidate.block_score, created_at=now))
    if rules:
        conn.execute(schema.rules.insert(), [
            {"version": version, "name": r.name, "expression": r.expression,
             "action": r.action, "weight": r.weight, "enabled": r.enabled, "shadow": r.shadow,
             "description": r.description} for r in rules])
    if activate:
        from lianjie.risk.store import set_state
        set_state(conn, rules_version=version)
    return RuleSet(version, tuple(rules), candidate.review_score, candidate.block_score)


def do_activate(conn: Connection, version: int) -> None:
    """Make a stored version (or 0, the built-in set) the active one: a rollback."""
    from lianjie.risk.store import set_state
    if version != 0 and conn.execute(select(schema.rule_sets.c.version).where(
            schema.rule_sets.c.version == version)).first() is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"no rule set version {version}", "version")
    compile_set(load_active(conn, version))
    set_state(conn, rules_version=version)


def list_versions(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(schema.rule_sets)
                                                   .order_by(schema.rule_sets.c.version))]
