"""``decide``: the risk decision on one money-moving event, before anything is posted.

The contract (also in docs/architecture.md), for every caller (payments, P2P, withdrawals, red
packet grabs, loan applications):

- call ``decide(conn, now, event)`` inside the unit of work that will move the money, after the
  request is validated and before the ledger entry is posted;
- ``block``: ``decide`` raises ``RiskDeclined`` (a ``DomainError`` with code ``risk_declined``),
  so the unit rolls back and nothing moves. The decision is still logged: the error carries a
  ``record`` callable that the committer runs in a fresh savepoint after the rollback, in the
  same durable group commit (``run_now`` does it in a second transaction);
- ``review``: ``decide`` returns a decision with ``review`` true and has logged it; the caller
  posts its entry as a ledger hold (``EntryKind.PENDING``) and calls ``open_case`` with the
  hold's entry id. The case's resolver (``register_resolver``) finishes the domain side when
  an operator approves (the hold is posted) or rejects, or the case expires (voided);
- ``allow``: logged, and the caller posts as usual.

State lives per database engine (``configure`` sets its ``RiskConfig``; the engine is on by
default). The features come from the fold of the decision log (``features``); rules, lists and
the model are reloaded when the version row says they changed.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import cel
import orjson
from sqlalchemy import Connection, Engine, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from lianjie.clock import to_us
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk import schema, store
from lianjie.risk.features import Event, FeatureState

log = logging.getLogger("lianjie.risk")

CATCH_UP_BATCH_MAX = 10_000
# A seq missing from the log (PostgreSQL) is looked for this long: longer than any transaction
# that decides should stay open. Past it, its transaction is taken to have rolled back.
GAP_WAIT_S = 30.0
GAPS_MAX = 10_000
GAP_LOOKUP_CHUNK = 1000
CASE_TTL_S_DEFAULT = 24 * 3600
DECIDE_MANY_MAX = 10_000


@dataclass(frozen=True)
class RiskConfig:
    enabled: bool = True
    # Shadow mode for the whole engine: decisions are made and logged, and always allow.
    shadow: bool = False
    case_ttl_s: int = CASE_TTL_S_DEFAULT


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    outcome: str  # allow, review, block
    score: float
    fired: tuple[str, ...]
    shadow_fired: tuple[str, ...]
    reasons: tuple[tuple[str, float], ...]
    rules_version: int
    model_version: int
    event: Event
    features: dict[str, Any] = field(repr=False)

    @property
    def review(self) -> bool:
        return self.outcome == "review"


class RiskDeclined(DomainError):
    """A block. ``record`` logs the decision after the unit has rolled back."""

    def __init__(self, decision: Decision, record: Callable[[Connection], None]) -> None:
        reasons = ", ".join(decision.fired) or "risk score"
        super().__init__(ErrorCode.RISK_DECLINED, f"the payment was declined ({reasons})")
        self.decision = decision
        self.record = record


# -- per-engine state ----------------------------------------------------------------------

@dataclass
class _State:
    cfg: RiskConfig = field(default_factory=RiskConfig)
    feats: FeatureState = field(default_factory=FeatureState)
    versions: store.Versions | None = None
    rule_set: rulesets.RuleSet = rulesets.DEFAULT_SET
    rules: rulesets.Batch = field(default_factory=lambda: rulesets.batch(()))
    model: models.Model | None = None
    lists: dict[str, dict[str, datetime | None]] = field(default_factory=dict)
    # The transaction the version row was last read in. Within one transaction the check is
    # not repeated: what this process changes there clears it (``store.set_state``), and what
    # other processes commit meanwhile is seen at the next transaction, as if it had
    # committed a moment later (on SQLite no other writer can commit while we hold the lock).
    checked_in: Any = None


_STATES: weakref.WeakKeyDictionary[Engine, _State] = weakref.WeakKeyDictionary()


def _state(conn: Connection) -> _State:
    engine = conn.engine
    st = _STATES.get(engine)
    if st is None:
        st = _STATES[engine] = _State()
    return st


def configure(engine: Engine, cfg: RiskConfig) -> None:
    """Set the engine's settings for this database (in this process)."""
    _STATES.setdefault(engine, _State()).cfg = cfg


def config_of(conn: Connection) -> RiskConfig:
    return _state(conn).cfg


_CHECK = select(schema.state.c.epoch, schema.state.c.rules_version, schema.state.c.model_version,
                schema.state.c.lists_version, select(func.max(schema.decisions.c.seq))
                .scalar_subquery()).where(schema.state.c.id == 1)
_MAX_SEQ_BEFORE = select(func.max(schema.decisions.c.seq)).where(
    schema.decisions.c.created_at < bindparam("b_since"))
_EVENT_COLS = (schema.decisions.c.seq, schema.decisions.c.kind, schema.decisions.c.subject_id,
               schema.decisions.c.actor_id, schema.decisions.c.amount,
               schema.decisions.c.currency, schema.decisions.c.counterparty_id,
               schema.decisions.c.sp_id, schema.decisions.c.device_id,
               schema.decisions.c.client_ip, schema.decisions.c.created_at)
_AFTER = select(*_EVENT_COLS).where(schema.decisions.c.seq > bindparam("b_after")
                                    ).order_by(schema.decisions.c.seq).limit(CATCH_UP_BATCH_MAX)
_GAP_ROWS = select(*_EVENT_COLS).where(schema.decisions.c.seq.in_(bindparam("b_seqs",
                                                                           expanding=True)),
                                       schema.decisions.c.created_at >= bindparam("b_since"))


def refresh(conn: Connection, now: datetime) -> _State:
    """Bring this process's state in step with the database: one read when nothing changed."""
    st = _state(conn)
    tx = conn.get_transaction()
    if tx is not None and tx is st.checked_in and tx.is_active:
        return st
    row = conn.execute(_CHECK).first()
    if row is None:  # the version row is made on first use; its epoch names this database
        try:
            with conn.begin_nested():
                store.set_state(conn)
        except IntegrityError:  # another process made it first
            pass
        row = conn.execute(_CHECK).one()
    versions = store.Versions(row[0], row[1], row[2], row[3])
    max_seq = int(row[4] or 0)
    if st.versions is not None and st.versions.epoch != versions.epoch:
        st.feats = FeatureState()  # a new or emptied database: fold it from the start
        st.versions = None
    if st.versions != versions:
        _reload(conn, st, versions)
    if max_seq > st.feats.last_seq or st.feats.gaps:  # others wrote rows (or a fresh start)
        _catch_up(conn, st.feats, now)
    st.checked_in = conn.get_transaction()
    return st


def forget_check(conn: Connection) -> None:
    """The versions changed in this transaction: read them again before the next decision."""
    st = _STATES.get(conn.engine)
    if st is not None:
        st.checked_in = None


def _reload(conn: Connection, st: _State, versions: store.Versions) -> None:
    old = st.versions
    if old is None or old.rules != versions.rules:
        st.rule_set = rulesets.load_active(conn, versions.rules)
        st.rules = rulesets.batch(rulesets.compile_set(st.rule_set))
    if old is None or old.model != versions.model:
        st.model = models.load_active(conn, versions.model)
    if old is None or old.lists != versions.lists:
        st.lists = store.load_lists(conn)
    st.versions = versions


def _catch_up(conn: Connection, feats: FeatureState, now: datetime) -> None:
    """Fold the log rows other processes wrote since the last read.

    On PostgreSQL a row's ``seq`` is drawn when it is inserted, so rows commit out of ``seq``
    order: reading past a missing seq could skip a row that commits a moment later, and velocity
    would undercount for good. A missing seq (not this process's own) is kept in ``gaps`` and
    looked up again at each transaction until it appears or ``GAP_WAIT_S`` has passed (its
    transaction rolled back: a failed payment leaves such a hole). SQLite has one writer at a
    time, so a seq missing there has rolled back."""
    since = now - timedelta(days=8)
    if feats.gaps:
        _fill_gaps(conn, feats, since)
    track = conn.dialect.name == "postgresql"
    if feats.last_seq == 0:
        # A fresh start folds the last days only: start past the older rows. On PostgreSQL a
        # seq missing above that floor is a gap (its transaction may still be open).
        feats.last_seq = int(conn.execute(_MAX_SEQ_BEFORE, {"b_since": since}).scalar() or 0)
    # Every seq past ``last_seq`` is read, never skipped over: on PostgreSQL each statement
    # sees the rows committed when it starts, so jumping to a ``MAX(seq)`` read by a later
    # statement would pass over rows committed in between.
    since_s = since.timestamp()
    while True:
        rows = conn.execute(_AFTER, {"b_after": feats.last_seq}).all()
        for r in rows:
            if track and r.seq > feats.last_seq + 1:
                _note_gaps(feats, range(feats.last_seq + 1, r.seq))
            if r.seq not in feats.own and r.created_at.timestamp() >= since_s:
                _apply_row(feats, r)
            feats.last_seq = r.seq
        if len(rows) < CATCH_UP_BATCH_MAX:
            feats.own = {s for s in feats.own if s > feats.last_seq}
            return


def _apply_row(feats: FeatureState, r: Any) -> None:
    feats.apply(Event(r.kind, r.subject_id, r.actor_id, r.amount, r.currency,
                      r.counterparty_id, r.sp_id, r.device_id, r.client_ip),
                r.created_at.timestamp())


def _note_gaps(feats: FeatureState, seqs: range) -> None:
    noticed = time.monotonic()
    for seq in seqs[-GAPS_MAX:]:
        if seq not in feats.own:
            feats.gaps[seq] = noticed
    if len(feats.gaps) > GAPS_MAX:  # oldest first: dicts keep insertion order
        log.warning("risk log: %d missing seqs pending, dropping the oldest", len(feats.gaps))
        for seq in list(feats.gaps)[:len(feats.gaps) - GAPS_MAX]:
            del feats.gaps[seq]


def _fill_gaps(conn: Connection, feats: FeatureState, since: datetime) -> None:
    """Fold the rows that have appeared at seqs missing before; forget the old holes."""
    wanted = sorted(feats.gaps)
    for i in range(0, len(wanted), GAP_LOOKUP_CHUNK):
        for r in conn.execute(_GAP_ROWS, {"b_seqs": wanted[i:i + GAP_LOOKUP_CHUNK],
                                          "b_since": since}):
            _apply_row(feats, r)
            del feats.gaps[r.seq]
    cutoff = time.monotonic() - GAP_WAIT_S
    feats.gaps = {s: t for s, t in feats.gaps.items() if t > cutoff}


# -- deciding ------------------------------------------------------------------------------

def _listed(lists: dict[str, datetime | None], value: str | None, now: datetime) -> int:
    if not value or value not in lists:
        return 0
    expires = lists[value]
    return int(expires is None or expires > now)


def _list_features(st: _State, e: Event, now: datetime) -> dict[str, int]:
    block, allow = st.lists.get("block", {}), st.lists.get("allow", {})
    return {"actor_blocked": _listed(block, e.actor_id, now),
            "counterparty_blocked": _listed(block, e.counterparty_id, now),
            "device_blocked": _listed(block, e.device_id, now),
            "ip_blocked": _listed(block, e.client_ip, now),
            "actor_allowed": _listed(allow, e.actor_id, now)}


def evaluate(compiled: tuple[rulesets.Compiled, ...] | rulesets.Batch, feats: dict[str, Any]
             ) -> tuple[list[rulesets.Rule], list[str]]:
    """The rules that fire (shadow ones included) and the names of any that failed to run."""
    if isinstance(compiled, rulesets.Batch):
        rules = compiled
        try:
            inputs = tuple(map(feats.__getitem__, rules.variables))
        except KeyError:  # a feature is missing: one by one, naming the rules that fail
            inputs = None
        if rules.program is not None and inputs is not None:
            key = rulesets.memo_key(inputs)
            known = rules.fired.get(key) if key is not None else None
            if known is not None:
                return list(known), []
            with rules.lock:
                rules.context.update(dict(zip(rules.variables, inputs, strict=True)))
                try:
                    results = rules.program.execute(rules.context)
                except rulesets.CEL_ERRORS:
                    results = None  # a rule failed: one by one, to name it and keep the others
            if results is not None:
                fired = [c.rule for c, r in zip(rules.compiled, results, strict=True)
                         if r is True]
                if key is not None:
                    if len(rules.fired) >= rulesets.FIRED_MEMO_MAX:
                        rules.fired.clear()
                    rules.fired[key] = tuple(fired)
                return fired, []
        return _one_by_one(rules.compiled, cel.Context(
            {n: feats[n] for n in rules.variables if n in feats}))
    return _one_by_one(compiled, cel.Context(feats))


def _one_by_one(compiled: tuple[rulesets.Compiled, ...], context: Any
                ) -> tuple[list[rulesets.Rule], list[str]]:
    fired: list[rulesets.Rule] = []
    failed: list[str] = []
    for c in compiled:
        try:
            if c.program.execute(context) is True:
                fired.append(c.rule)
        except rulesets.CEL_ERRORS:
            failed.append(c.rule.name)
    return fired, failed


def _rules_verdict(fired: list[rulesets.Rule]) -> tuple[str | None, float]:
    """What the acting (not shadow) rules that fired decide outright, by precedence block,
    allow, review (None: they only score), and the points of the scoring ones."""
    acting = [r for r in fired if not r.shadow]
    actions = {r.action for r in acting}
    verdict = next((a for a in ("block", "allow", "review") if a in actions), None)
    return verdict, sum(r.weight for r in acting if r.action == "score")


def outcome_of(fired: list[rulesets.Rule], rule_set: rulesets.RuleSet, model_p: float | None,
               model_points: float) -> tuple[str, float]:
    """Outcome and score from the acting rules and the model's probability."""
    verdict, score = _rules_verdict(fired)
    if model_p is not None:
        score += model_points * model_p
    if verdict is not None:
        return verdict, score
    if score >= rule_set.block_score:
        return "block", score
    if score >= rule_set.review_score:
        return "review", score
    return "allow", score


def model_headroom(fired: list[rulesets.Rule], rule_set: rulesets.RuleSet) -> float:
    """What the model must still add for ``outcome_of`` to stop an event (review or block),
    given the rules that fired, as a share of its review points: the event is stopped exactly
    when ``model_p / model.threshold >= model_headroom(...)``. 0 when the acting rules stop it
    already, infinity when one allows it outright, 1 when no rule added anything. Training
    uses it to choose the model's threshold for the rules it will serve beside."""
    verdict, score = _rules_verdict(fired)
    if verdict is not None:
        return math.inf if verdict == "allow" else 0.0
    stop_at = min(rule_set.review_score, rule_set.block_score)
    return max(0.0, (stop_at - score) / rule_set.review_score)


def decide(conn: Connection, now: datetime, event: Event, *, reviewable: bool = True
           ) -> Decision:
    """Decide on ``event``; raise ``RiskDeclined`` on block (see the module docstring).

    An event that cannot wait for an operator (``reviewable=False``: a red packet grab, a
    coupon claim) is blocked where another would go to review."""
    st = refresh(conn, now)
    if not st.cfg.enabled:
        return _unlogged(event)
    decision, row = _decide(st, now, event, reviewable)
    if decision.outcome == "block":
        raise RiskDeclined(decision, lambda c: _record(c, row, None))
    _record(conn, row, st)
    return decision


def _unlogged(event: Event) -> Decision:
    """What the engine answers when it is off for the database: allow, and nothing logged."""
    return Decision("", "allow", 0.0, (), (), (), 0, 0, event, {})


def _decide(st: _State, now: datetime, event: Event, reviewable: bool
            ) -> tuple[Decision, tuple[Any, ...]]:
    """The decision and its log row; the event is folded into the state (not yet logged)."""
    feats = st.feats.features(event, now)
    feats.update(_list_features(st, event, now))
    fired, failed = evaluate(st.rules, feats)
    p = st.model.score(feats) if st.model is not None else None
    outcome, score = outcome_of(fired, st.rule_set, p, _model_points(st))
    reasons = st.model.reasons(feats) if st.model is not None and outcome != "allow" else []
    if st.cfg.shadow:
        outcome = "allow"
    elif outcome == "review" and not reviewable:
        outcome = "block"
    decision = Decision(
        new_id("rd"), outcome, round(score, 4), tuple(r.name for r in fired if not r.shadow),
        tuple(r.name for r in fired if r.shadow), tuple(reasons),
        st.rule_set.version, st.model.version if st.model else 0, event, feats)
    if failed:
        log.warning("risk rules failed to evaluate: %s", ", ".join(failed))
    # The event counts from now on in this process, whatever happens to the unit: an attempt
    # is a signal even when it then fails (see features' docstring).
    st.feats.apply(event, now.timestamp())
    return decision, _log_row(decision, now, p)


class Batch:
    """Decisions on several events inside one unit of work, for callers that decide many at
    once (a batch of red packet grabs): what ``decide`` does for each, in order, but the
    engine's state is brought in step once (``refresh``) and the log rows are written together
    by ``flush``, in decision order, with one ``executemany``.

    Each event is folded into the state as it is decided, so the next one's velocity counts
    it, as with ``decide`` one by one: the decisions, their features and their log rows are the
    same. ``decide`` raises ``RiskDeclined`` on block as usual; its ``record``, called on this
    connection before ``flush``, queues the row in its place among the others (afterwards, or
    on another connection, it writes it at once). Call ``flush`` before the unit commits: a
    row not flushed is not logged, and its event stays counted in this process only.
    ``withdraw`` takes back the row of a decision whose own work was then refused (a payment
    the ledger turned down), as a unit rolled back to its savepoint logs nothing."""

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.conn, self.now = conn, now
        self.st = refresh(conn, now)
        self.rows: list[tuple[Any, ...]] = []
        self.flushed = False
        self._withdrawn: set[int] = set()  # positions in ``rows``
        self._position: dict[str, int] = {}  # a decision's id -> its row's position

    def decide(self, event: Event, *, reviewable: bool = True) -> Decision:
        assert not self.flushed, "a flushed batch decides no more"
        if not self.st.cfg.enabled:
            return _unlogged(event)
        decision, row = _decide(self.st, self.now, event, reviewable)
        if decision.outcome == "block":
            raise RiskDeclined(decision, lambda c: self._record_block(c, row))
        self._position[decision.id] = len(self.rows)
        self.rows.append(row)
        return decision

    def withdraw(self, decision: Decision) -> None:
        """Do not log ``decision`` (its event stays counted in this process, as a rolled-back
        unit's does)."""
        assert not self.flushed, "a flushed row is logged"
        position = self._position.pop(decision.id, None)  # None: unlogged, the engine is off
        if position is not None:
            self._withdrawn.add(position)

    def _record_block(self, conn: Connection, row: tuple[Any, ...]) -> None:
        if conn is self.conn and not self.flushed:
            self.rows.append(row)
        else:
            _record(conn, row, None)

    def flush(self) -> None:
        """Write the queued log rows (one ``executemany``) and remember their seqs."""
        self.flushed = True
        rows = [row for k, row in enumerate(self.rows) if k not in self._withdrawn] \
            if self._withdrawn else self.rows
        if rows:
            _record_many(self.conn, rows, self.st)
        self.rows = []


def decide_many(conn: Connection, now: datetime, events: list[Event], *,
                reviewable: bool = True) -> list[Decision | RiskDeclined]:
    """``decide`` on each event in order, as one ``Batch``: a block is returned (not raised)
    as its ``RiskDeclined``, already logged with the others in this unit of work. For callers
    whose later events do not depend on earlier outcomes; one whose do (a grab's share depends
    on the grabs allowed before it) uses ``Batch`` itself."""
    assert len(events) <= DECIDE_MANY_MAX, "decide a bounded batch at a time"
    batch = Batch(conn, now)
    out: list[Decision | RiskDeclined] = []
    for event in events:
        try:
            out.append(batch.decide(event, reviewable=reviewable))
        except RiskDeclined as declined:
            declined.record(conn)
            out.append(declined)
    batch.flush()
    return out


def _model_points(st: _State) -> float:
    """Points per unit of probability: the model's threshold scores exactly ``review_score``."""
    if st.model is None:
        return 0.0
    return st.rule_set.review_score / st.model.threshold


def _record(conn: Connection, row: tuple[Any, ...], st: _State | None) -> None:
    """Log a decision. Its event is already folded into this process's state: remember its
    ``seq`` so that catching up with the log does not count it twice.

    The row (``_log_row``: values in ``_LOG_COLUMNS`` order) goes straight to the driver's
    cursor, inside the connection's transaction and savepoint like any statement: one INSERT
    whose SQL is built once per dialect, where SQLAlchemy's ``execute`` spent about three
    quarters of the insert's CPU time on compiling the statement from its cache key and
    processing parameters."""
    sql, returning = _insert_sql(conn)
    if conn.get_transaction() is None:  # not begun: let SQLAlchemy begin it as usual
        result = conn.exec_driver_sql(sql, row)
        seq = int(result.scalar_one() if returning else result.lastrowid)
    else:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, row)
            seq = int(cursor.fetchone()[0] if returning else cursor.lastrowid)  # type: ignore[index]
        finally:
            cursor.close()
    owner = st if st is not None else _STATES.get(conn.engine)
    if owner is not None:
        owner.feats.wrote(seq)


def _record_many(conn: Connection, rows: list[tuple[Any, ...]], st: _State) -> None:
    """Log several decisions with one ``executemany`` and remember every row's ``seq``, as
    ``_record`` does for one. SQLite: one writer holds the database while the rows go in, so
    they take consecutive seqs ending at ``last_insert_rowid()``. PostgreSQL: each row's seq
    comes back through ``RETURNING`` (psycopg's ``executemany(returning=True)``, one result
    set a row); catch-up tracks the gaps other transactions leave, never this one's rows."""
    sql, returning = _insert_sql(conn)
    if conn.get_transaction() is None:
        conn.begin()  # what SQLAlchemy's autobegin does for its own statements
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        if returning:
            cursor.executemany(sql, rows, returning=True)
            seqs = []
            while True:
                seqs.append(int(cursor.fetchone()[0]))
                if not cursor.nextset():
                    break
        else:
            cursor.executemany(sql, rows)
            assert cursor.rowcount == len(rows), (cursor.rowcount, len(rows))
            cursor.execute("SELECT last_insert_rowid()")
            last = int(cursor.fetchone()[0])
            seqs = list(range(last - len(rows) + 1, last + 1))
    finally:
        cursor.close()
    assert len(seqs) == len(rows)
    for seq in seqs:
        st.feats.wrote(seq)


_LOG_COLUMNS = ("id", "kind", "subject_id", "actor_id", "counterparty_id", "sp_id", "device_id",
                "client_ip", "amount", "currency", "category", "actor_since",
                "counterparty_since", "outcome", "score", "rules_version", "model_version",
                "fired", "reasons", "features", "created_at")
assert set(_LOG_COLUMNS) == {c.name for c in schema.decisions.columns} - {
    "seq", "label", "label_source"}
_INSERT_SQL: dict[str, tuple[str, bool]] = {}  # dialect -> (SQL, uses RETURNING)


def _insert_sql(conn: Connection) -> tuple[str, bool]:
    dialect = conn.dialect
    sql = _INSERT_SQL.get(dialect.name)
    if sql is None:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        returning = dialect.name != "sqlite"  # SQLite's cursor has ``lastrowid``
        text = (f"INSERT INTO {schema.decisions.name} ({', '.join(_LOG_COLUMNS)}) VALUES "
                f"({', '.join([mark] * len(_LOG_COLUMNS))})"
                + (" RETURNING seq" if returning else ""))
        sql = _INSERT_SQL[dialect.name] = (text, returning)
    return sql


def _log_row(d: Decision, now: datetime, model_p: float | None) -> tuple[Any, ...]:
    """The decision's log row in ``_LOG_COLUMNS`` order, times as ``Timestamp`` stores them."""
    e = d.event
    fired = [*d.fired, *(f"shadow:{n}" for n in d.shadow_fired)] if d.shadow_fired else d.fired
    features = d.features
    if model_p is not None:
        features = {**features, "model_p": round(model_p, 6)}
    return (d.id, e.kind, e.subject_id, e.actor_id, e.counterparty_id, e.sp_id, e.device_id,
            e.client_ip, e.amount, e.currency, e.category,
            None if e.actor_since is None else to_us(e.actor_since),
            None if e.counterparty_since is None else to_us(e.counterparty_since),
            d.outcome, d.score, d.rules_version, d.model_version,
            orjson.dumps(fired).decode(), orjson.dumps(d.reasons).decode(),  # tuples: arrays
            orjson.dumps(features).decode(), to_us(now))


def refresh_and_features(engine: Engine, now: datetime, event: Event) -> dict[str, Any]:
    """The features ``event`` would get now, without deciding (for operators and tests)."""
    with engine.connect() as conn:
        st = refresh(conn, now)
        feats = st.feats.features(event, now)
        feats.update(_list_features(st, event, now))
        return feats
