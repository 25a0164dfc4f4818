"""The one place where marketing asks risk control about a grab, a claim or a redemption.

Device farms and multi-account claims are the risk engine's job, not marketing's: marketing
enforces only its own limits (one grab per member, per-person and total coupon limits, budgets).
Every grab, claim and redemption passes through ``screen`` inside its unit of work, before any
money moves, so wiring the risk engine in is a change to this function alone; a batch of grabs
in one unit passes through ``Screening``, the same questions asked as one batch of the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

if TYPE_CHECKING:
    from lianjie.risk import Batch

_KINDS = {"grab": "red_packet_grab", "claim": "coupon_claim"}


def asks(conn: Connection) -> bool:
    """Whether ``screen`` asks the risk engine at all. When the engine is off for this database
    it allows every event without logging it, so a batch of grabs skips ``screen`` (and the
    engine's per-call refresh read) altogether."""
    from lianjie import risk

    return risk.config_of(conn).enabled


def screen(conn: Connection, now: datetime, action: str, consumer_id: str, subject_id: str,
           amount: int, currency: str, device_id: str | None = None) -> None:
    """Ask the risk engine about ``action`` ("grab", "claim", "redeem") before money moves.

    A decline raises ``risk_declined`` (``lianjie.risk.RiskDeclined``, whose ``record`` logs
    the decision). A grab or a claim cannot wait for an operator, so the engine blocks where it
    would review. A redemption is part of a payment, and the payment itself is decided as one,
    so it is not asked twice.
    """
    if action == "redeem":
        return
    from lianjie import risk  # risk depends on payments; marketing asks it lazily

    risk.decide(conn, now, risk.Event(_KINDS[action], subject_id, consumer_id, amount, currency,
                                      device_id=device_id), reviewable=False)


class Screening:
    """``screen`` for many grabs in one unit of work, through the engine's ``Batch``: its state
    is brought in step once, each grab is decided in order (the next one's velocity counts
    it), and the decisions are logged together by ``finish``, which the unit calls before it
    commits. Decisions are those ``screen`` would give one by one. A decline raises
    ``risk_declined`` as ``screen`` does; calling its ``record`` on this connection logs it in
    its place among the batch's."""

    def __init__(self, conn: Connection, now: datetime) -> None:
        from lianjie import risk

        self._batch: Batch = risk.Batch(conn, now)
        self._event = risk.Event

    def grab(self, consumer_id: str, subject_id: str, amount: int, currency: str,
             device_id: str | None = None) -> None:
        self._batch.decide(self._event(_KINDS["grab"], subject_id, consumer_id, amount,
                                       currency, device_id=device_id), reviewable=False)

    def finish(self) -> None:
        self._batch.flush()
