"""The one place where marketing asks risk control about a grab, a claim or a redemption.

Device farms and multi-account claims are the risk engine's job, not marketing's: marketing
enforces only its own limits (one grab per member, per-person and total coupon limits, budgets).
Every grab, claim and redemption passes through ``screen`` inside its unit of work, before any
money moves, so wiring the risk engine in is a change to this function alone.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

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
