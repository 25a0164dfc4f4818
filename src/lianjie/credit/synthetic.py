"""A fast synthetic payment history: a year of paid orders per merchant in bulk inserts.

The in-process and HTTP simulators post every payment through the ledger, which is right for
testing payments but too slow for a year of history for thousands of merchants. This generator
writes ``payment_orders`` rows only (``entry_id`` empty: history for features, not money), from
a merchant's latent cash-flow profile, so scores trained on it carry real signal:

- ``level``: mean daily takings; ``trend``: growth per 30 days; ``volatility``: day-to-day
  noise; ``activity``: share of days open; ``loyalty``: share of payers who return.

``health`` (higher is safer) is what a default outcome follows (see ``default_probability``).
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from lianjie.payments.schema import orders

INSERT_BATCH_ROWS = 5_000
PAYERS_PER_MERCHANT = 400


@dataclass(frozen=True, slots=True)
class Profile:
    level: int  # mean daily takings, minor units
    trend: float
    volatility: float
    activity: float
    loyalty: float
    refund_rate: float

    @property
    def health(self) -> float:
        return (math.log10(max(self.level, 1)) - 4.3 + 6 * self.trend - 1.5 * self.volatility
                + 1.5 * self.activity + self.loyalty - 10 * self.refund_rate)


def random_profile(rng: random.Random) -> Profile:
    return Profile(level=int(10 ** rng.uniform(3.5, 5.5)), trend=rng.gauss(0.0, 0.08),
                   volatility=rng.uniform(0.1, 1.2), activity=rng.uniform(0.3, 1.0),
                   loyalty=rng.uniform(0.05, 0.7), refund_rate=rng.uniform(0.0, 0.06))


def default_probability(profile: Profile) -> float:
    """The chance this merchant defaults on a loan: a logistic function of its health."""
    return 1.0 / (1.0 + math.exp(2.2 * profile.health + 1.0))


def generate(conn: Connection, merchant_id: str, profile: Profile, end: datetime, days: int,
             rng: random.Random, *, payments_per_day_max: int = 25) -> int:
    """Insert ``days`` days of paid orders ending before ``end``; returns how many. The ticket
    grows with the merchant's level so a day has at most ``payments_per_day_max`` payments."""
    ticket = max(3_000, profile.level // payments_per_day_max)
    rows: list[dict[str, object]] = []
    count = 0
    start = end - timedelta(days=days)
    for d in range(days):
        if rng.random() > profile.activity:
            continue
        months_from_end = (days - d) / 30
        mean = profile.level * (1 + profile.trend) ** (-months_from_end)
        takings = max(0.0, rng.gauss(mean, mean * profile.volatility))
        n = max(1, int(takings / ticket))
        day_start = start + timedelta(days=d, hours=8)
        for k in range(n):
            amount = max(1, int(rng.expovariate(1 / ticket)))
            returning = rng.random() < profile.loyalty
            payer = rng.randrange(PAYERS_PER_MERCHANT // 10 if returning else
                                  PAYERS_PER_MERCHANT * 10)
            at = day_start + timedelta(seconds=k * 40_000 // n)
            refunded = amount if rng.random() < profile.refund_rate else 0
            rows.append(_row(merchant_id, amount, at, f"cus_{merchant_id[-6:]}{payer}",
                             refunded))
            count += 1
        if len(rows) >= INSERT_BATCH_ROWS:
            conn.execute(orders.insert(), rows)
            rows = []
    if rows:
        conn.execute(orders.insert(), rows)
    return count


def _row(merchant_id: str, amount: int, at: datetime, payer: str, refunded: int
         ) -> dict[str, object]:
    order_id = "ord_" + secrets.token_hex(14)  # 112 random bits, cheaper than ids.new_id
    return dict(id=order_id, merchant_id=merchant_id, sp_id=None, store_id=None,
                qr_code_id=None, out_trade_no=order_id, amount=amount, currency="CNY",
                description="synthetic history", status="paid", expires_at=at, created_at=at,
                paid_at=at, closed_at=None, payer_id=payer, entry_id=None,
                fee_amount=amount * 38 // 10_000, commission_amount=0,
                refunded_amount=refunded, refunded_fee=0, refunded_commission=0,
                device_id=None, client_ip=None)
