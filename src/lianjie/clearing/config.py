"""Settings of the clearing context and the business day.

A business day ends at a daily cut-off in the configured time zone (Asia/Shanghai by default);
anything recorded after the cut-off belongs to the next business day. Business dates are plain
``date`` values; the instants that bound them are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from lianjie.clock import business_day_end


@dataclass(frozen=True)
class ClearingConfig:
    timezone: str = "Asia/Shanghai"
    cutoff: time = time(0, 0)  # local time at which a business day ends
    settlement_delay_days_default: int = 1  # T+1
    settlement_delay_days_max: int = 30
    # The institution that pays merchants out when a merchant names none; None: the oldest
    # institution on the platform.
    payout_institution_id: str | None = None
    # Net debit cap per institution, in minor units, when no per-institution cap is set.
    net_debit_cap_default: int = 10**15
    # Entry codes posted at end of day for the day just ended, before settlement: loan
    # repayments from receipts when the credit end of day runs on its own, ahead of this
    # job (it then takes from merchant_pending); settlement nets them with that day.
    eod_codes: tuple[str, ...] = ("loan_repayment",)

    def day_end(self, business_date: date) -> datetime:
        """The instant (UTC) at which ``business_date`` ends."""
        return business_day_end(business_date, self.timezone, self.cutoff)

    def day_start(self, business_date: date) -> datetime:
        return self.day_end(business_date - timedelta(days=1))

    def business_date(self, when: datetime) -> date:
        """The business day an instant belongs to."""
        assert when.tzinfo is not None
        local = when.astimezone(ZoneInfo(self.timezone))
        if self.cutoff == time(0, 0):
            return local.date()
        return local.date() + timedelta(days=1) if local.time() >= self.cutoff else local.date()
