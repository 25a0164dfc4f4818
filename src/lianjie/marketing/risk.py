"""The one place where marketing asks risk control about a grab, a claim or a redemption.

Device farms and multi-account claims are the risk engine's job, not marketing's: marketing
enforces only its own limits (one grab per member, per-person and total coupon limits, budgets).
Every grab, claim and redemption passes through ``screen`` inside its unit of work, before any
money moves, so wiring the risk engine in is a change to this function alone.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection


def screen(conn: Connection, now: datetime, action: str, consumer_id: str, subject_id: str,
           amount: int, device_id: str | None = None) -> None:
    """Raise ``DomainError`` to refuse ``action`` ("grab", "claim", "redeem"); today: allow.

    RISK CALL SITE: send (action, consumer, subject, amount, device) to the risk engine here
    and raise its decline as a DomainError; nothing has moved yet, so a refusal changes
    nothing.
    """
    del conn, now, action, consumer_id, subject_id, amount, device_id
