"""Fees and commissions: what the platform keeps and what the service provider earns.

Policy, stated once:

- The fee is ``amount * fee_rate_bps / 10_000`` rounded half up to the fen (as WeChat Pay does).
- The service provider's commission is its share of the fee, split with ``allocate`` so the
  platform's part and the SP's part always add up to the fee.
- A refund returns the fee and the commission in proportion to the amount refunded. The
  proportion is taken on the running total (refunded so far / paid), so after several partial
  refunds that add up to the whole order, exactly the whole fee and commission are returned and
  no rounding residue is left behind.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP

from lianjie.money import BPS_DENOMINATOR, allocate, bps_of


def fee_for(amount: int, fee_rate_bps: int) -> int:
    assert amount > 0 and 0 <= fee_rate_bps <= BPS_DENOMINATOR
    return bps_of(amount, fee_rate_bps, rounding=ROUND_HALF_UP)


def commission_for(fee: int, commission_share_bps: int) -> int:
    assert fee >= 0 and 0 <= commission_share_bps <= BPS_DENOMINATOR
    if fee == 0 or commission_share_bps == 0:
        return 0
    commission, _platform = allocate(fee, [commission_share_bps,
                                           BPS_DENOMINATOR - commission_share_bps])
    return commission


def refund_share(total: int, paid: int, refunded_before: int, refund: int,
                 total_returned_before: int) -> int:
    """The part of ``total`` (a fee or commission) that goes back with this refund."""
    assert 0 < refund and refunded_before + refund <= paid
    returned_after = total * (refunded_before + refund) // paid
    if refunded_before + refund == paid:
        returned_after = total
    share = returned_after - total_returned_before
    assert 0 <= share <= total - total_returned_before
    return share
