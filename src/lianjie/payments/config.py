"""Settings of the payments context, with the defaults a deployment starts from."""

from __future__ import annotations

from dataclasses import dataclass, field

from lianjie.money import DEFAULT_CURRENCY

BUSINESS_TYPES = frozenset({
    "street_food", "convenience_store", "market_stall", "restaurant", "cafe", "bakery",
    "fruit_shop", "pharmacy", "hair_salon", "repair_shop", "clothing", "online_shop", "other",
})


@dataclass(frozen=True)
class PaymentsConfig:
    currency: str = DEFAULT_CURRENCY
    platform_name: str = "Lianjie platform"
    # The platform's bounds on merchant fee rates (WeChat Pay's standard rate is 0.6%, small
    # merchants often 0.38%); a service provider sets each sub-merchant's rate inside them.
    fee_rate_bps_min: int = 20
    fee_rate_bps_max: int = 100
    default_fee_rate_bps: int = 38
    default_commission_share_bps: int = 3000  # the SP's share of the fee
    order_expiry_s_default: int = 2 * 3600
    order_expiry_s_max: int = 7 * 86_400
    order_expiry_s_min: int = 30
    base_url: str = "http://127.0.0.1:8000"
    business_types: frozenset[str] = field(default=BUSINESS_TYPES)
