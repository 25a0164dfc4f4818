"""What a simulation run did: counts, money moved, errors (expected apart from unexpected) and
the final checks, with a human summary.

Counts come from the outcomes the system returned to the agents, not from the database, so they
mean the same in-process and over HTTP against a server whose database we cannot read. A run is
``ok`` when nothing unexpected failed, the ledger verifies, and every agent's belief about its
wallet matches the wallet's ledger balance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from lianjie.sim import ops as o
from lianjie.sim.world import Label

ERROR_EXAMPLES_MAX = 20
PAYMENT_KINDS = ("pay_order", "pay_static_code")


def yuan(fen: int) -> str:
    """Fen as yuan for people: 1234567 -> '¥12,345.67' (integer arithmetic, no rounding)."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{part:02d}"


@dataclass
class SimReport:
    mode: str
    seed: int
    start: date
    days: int
    ok_counts: Counter[str] = field(default_factory=Counter)
    amounts: Counter[str] = field(default_factory=Counter)
    fees: Counter[str] = field(default_factory=Counter)
    commissions: Counter[str] = field(default_factory=Counter)
    expected_errors: Counter[str] = field(default_factory=Counter)
    unexpected_errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    kyc: Counter[str] = field(default_factory=Counter)
    orders_expired: int = 0
    holds_expired: int = 0
    deliveries_enqueued: int = 0
    events: int = 0
    operations: int = 0
    verify_problems: list[str] = field(default_factory=list)
    wallets_checked: int | None = None  # None: the balances could not be read
    server_housekeeping: bool = False  # an external server expires orders and feeds webhooks
    labels: list[Label] = field(default_factory=list)  # ground truth, never shown to the system
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unexpected_errors and not self.verify_problems

    def record(self, step: o.Step, outcome: o.Outcome) -> None:
        kind = step.op.kind
        self.operations += 1
        if outcome.status == o.Status.SKIPPED:
            self.skipped[kind] += 1
        elif outcome.ok:
            assert outcome.result is not None
            if step.must_fail:
                self.unexpected(f"{kind}:unexpected_success", f"{step.op!r} succeeded")
            self.ok_counts[kind] += 1
            self.amounts[kind] += outcome.result.amount
            self.fees[kind] += outcome.result.fee
            self.commissions[kind] += outcome.result.commission
        elif outcome.code in step.expect:
            self.expected_errors[f"{kind}:{outcome.code}"] += 1
        else:
            self.unexpected(f"{kind}:{outcome.code}", outcome.message or "")

    def unexpected(self, key: str, message: str) -> None:
        self.unexpected_errors[key] += 1
        if len(self.error_examples) < ERROR_EXAMPLES_MAX:
            self.error_examples.setdefault(key, message)

    # -- derived counts ------------------------------------------------------------------------

    @property
    def orders_created(self) -> int:
        return self.ok_counts["create_order"] + self.ok_counts["pay_static_code"]

    @property
    def orders_paid(self) -> int:
        return sum(self.ok_counts[k] for k in PAYMENT_KINDS)

    @property
    def gmv(self) -> int:
        return sum(self.amounts[k] for k in PAYMENT_KINDS)

    def counts(self) -> dict[str, int]:
        """The numbers a repeat of the run with the same seed must reproduce exactly."""
        out = {f"ok.{k}": v for k, v in sorted(self.ok_counts.items())}
        out.update({f"amount.{k}": v for k, v in sorted(self.amounts.items())})
        out.update({f"fee.{k}": v for k, v in sorted(self.fees.items())})
        out.update({f"expected.{k}": v for k, v in sorted(self.expected_errors.items())})
        out.update({f"unexpected.{k}": v for k, v in sorted(self.unexpected_errors.items())})
        out.update(orders_expired=self.orders_expired, events=self.events,
                   operations=self.operations)
        return out

    # -- the summary ---------------------------------------------------------------------------

    def summary(self) -> str:
        last = self.start + timedelta(days=self.days - 1)
        span = f"{self.start:%a %Y-%m-%d}" if self.days == 1 else \
            f"{self.start:%a %Y-%m-%d} to {last:%a %Y-%m-%d}"
        lines = [
            f"Lianjie simulation: seed {self.seed}, {self.days} day(s), {span} (Asia/Shanghai), "
            f"{self.mode}, {self.elapsed_s:.1f} s",
            *self._money_lines(),
            f"  simulated    {self.events:,} events, {self.operations:,} operations"
            + (f" ({sum(self.skipped.values())} skipped after a failed step)"
               if self.skipped else ""),
            *self._error_lines(),
            *self._check_lines(),
            f"  result       {'OK' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)

    def _money_lines(self) -> list[str]:
        c, a = self.ok_counts, self.amounts
        kyc = ", ".join(f"{n} {k}" for k, n in sorted(self.kyc.items()))
        refund_fees = self.fees["refund"]
        fees = sum(self.fees[k] for k in PAYMENT_KINDS) - refund_fees
        commissions = sum(self.commissions[k] for k in PAYMENT_KINDS) - \
            self.commissions["refund"]
        return [
            f"  parties      {c['create_service_provider']} service providers, "
            f"{c['onboard_merchant']} merchants (KYC: {kyc or 'none'}), "
            f"{c['create_consumer']} consumers, {c['create_institution']} institutions; "
            f"{c['create_store']} stores, {c['create_qr_code']} static codes",
            f"  orders       {self.orders_created:,} created, {self.orders_paid:,} paid "
            f"({c['pay_static_code']:,} by static code, {c['pay_order']:,} dynamic), "
            f"{c['close_order']} closed, {self.orders_expired} expired",
            f"  GMV          {yuan(self.gmv)}; fees {yuan(fees)} net of refunds, "
            f"of which SP commissions {yuan(commissions)}",
            f"  refunds      {c['refund']} for {yuan(a['refund'])} "
            f"(fees returned {yuan(refund_fees)})",
            f"  wallets      {c['top_up']:,} top-ups {yuan(a['top_up'])}, {c['withdrawal']} "
            f"withdrawals {yuan(a['withdrawal'])}, {c['p2p']} P2P {yuan(a['p2p'])}",
            "  housekeeping done by the server's own background jobs"
            if self.server_housekeeping else
            f"  housekeeping {self.orders_expired} orders and {self.holds_expired} holds "
            f"expired on the clock; outbox consumed, {self.deliveries_enqueued} webhook "
            "deliveries enqueued",
        ]

    def _error_lines(self) -> list[str]:
        def fmt(errors: Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(errors.items())) or "none"

        lines = [f"  errors       expected: {fmt(self.expected_errors)}",
                 f"               unexpected: {fmt(self.unexpected_errors)}"]
        lines += [f"                 {k}: {msg}" for k, msg in self.error_examples.items()]
        return lines

    def _check_lines(self) -> list[str]:
        if self.verify_problems:
            ledger = f"{len(self.verify_problems)} VIOLATION(S): " + \
                "; ".join(self.verify_problems[:5])
        else:
            ledger = "verified, every invariant holds"
        wallets = "could not be read" if self.wallets_checked is None else \
            f"{self.wallets_checked} wallets match what their owners expect"
        return [f"  ledger       {ledger}", f"  balances     {wallets}"]
