"""Money: integer minor units with an ISO 4217 currency, and the one place amounts are split.

An amount is an ``int`` of the currency's minor unit (fen for CNY). Floats are refused outright:
``0.1 + 0.2`` is not money. ``Decimal`` appears only at the edges (parsing, rates in basis points,
display), and every conversion from a ``Decimal`` to minor units names its rounding.

``allocate()`` is the only function that splits an amount into parts (fees, commissions, shares
between funders, red packets, instalments). It uses the largest-remainder method with ties broken
by position, so a split is deterministic and always sums to the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
)

from lianjie.errors import DomainError, ErrorCode

# 10^15 minor units: ten trillion yuan in one amount. Sums of many amounts still fit in a signed
# 64-bit column (9.2 * 10^18), which is what every amount column is.
AMOUNT_MAX = 10**15
BPS_DENOMINATOR = 10_000
# Scaling to minor units must be exact: the default context would round to 28 digits, silently.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int  # digits after the decimal point: CNY 2 (fen), JPY 0, BHD 3


# The currencies a deployment is likely to meet. Any ISO 4217 code can be added here; an unknown
# code is refused rather than guessed, because a wrong exponent is a factor-of-100 error.
_CURRENCIES: dict[str, Currency] = {
    c.code: c
    for c in (
        Currency("CNY", 2),
        Currency("HKD", 2),
        Currency("MOP", 2),
        Currency("TWD", 2),
        Currency("USD", 2),
        Currency("EUR", 2),
        Currency("GBP", 2),
        Currency("SGD", 2),
        Currency("THB", 2),
        Currency("MYR", 2),
        Currency("IDR", 2),
        Currency("PHP", 2),
        Currency("INR", 2),
        Currency("AUD", 2),
        Currency("CAD", 2),
        Currency("CHF", 2),
        Currency("JPY", 0),
        Currency("KRW", 0),
        Currency("VND", 0),
        Currency("BHD", 3),
        Currency("KWD", 3),
    )
}

DEFAULT_CURRENCY = "CNY"


def currency(code: str) -> Currency:
    """The currency for an ISO 4217 code, or ``unknown_currency``."""
    found = _CURRENCIES.get(code) if isinstance(code, str) else None
    if found is None:
        raise DomainError(ErrorCode.UNKNOWN_CURRENCY, f"unknown currency {code!r}", "currency")
    return found


def currency_codes() -> list[str]:
    return sorted(_CURRENCIES)


def check_amount(value: object, param: str = "amount", *, allow_zero: bool = False) -> int:
    """Return ``value`` as a valid amount in minor units, or raise a domain error.

    Accepts only a real ``int`` (``bool`` is refused: ``True`` is not one fen).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float):
            raise DomainError(ErrorCode.INVALID_AMOUNT, "amounts are integers of minor units; "
                              "floats are refused", param)
        raise DomainError(ErrorCode.INVALID_AMOUNT, "amount must be an integer of minor units",
                          param)
    lowest = 0 if allow_zero else 1
    if value < lowest:
        raise DomainError(ErrorCode.INVALID_AMOUNT,
                          f"amount must be at least {lowest} minor unit(s)", param)
    if value > AMOUNT_MAX:
        raise DomainError(ErrorCode.AMOUNT_TOO_LARGE, f"amount exceeds {AMOUNT_MAX}", param)
    return value


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: Currency

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("Money.amount_minor must be an int of minor units")

    @classmethod
    def of(cls, amount_minor: int, code: str = DEFAULT_CURRENCY) -> Money:
        return cls(amount_minor, currency(code))

    def __str__(self) -> str:
        return f"{format_amount(self.amount_minor, self.currency)} {self.currency.code}"


def to_minor(value: Decimal | str, cur: Currency, *, rounding: str | None = None) -> int:
    """Convert a decimal amount in major units (``"12.34"``) to minor units.

    Without ``rounding`` the value must already be exact in minor units; more digits are refused
    rather than silently truncated. With ``rounding`` (a ``decimal`` rounding mode) it is rounded.
    The result may be negative but never beyond ``AMOUNT_MAX`` either way (``amount_too_large``).
    """
    if isinstance(value, (float, bool)):
        raise DomainError(ErrorCode.INVALID_AMOUNT, "floats and bools are refused", "amount")
    try:
        dec = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise DomainError(ErrorCode.INVALID_AMOUNT, f"not a decimal amount: {value!r}",
                          "amount") from None
    if not dec.is_finite():
        raise DomainError(ErrorCode.INVALID_AMOUNT, "amount must be finite", "amount")
    scaled = dec.scaleb(cur.exponent, context=_EXACT)
    if scaled.copy_abs() > AMOUNT_MAX:  # also keeps quantize() within the context's precision
        raise DomainError(ErrorCode.AMOUNT_TOO_LARGE, f"amount exceeds {AMOUNT_MAX}", "amount")
    if rounding is None:
        if scaled != scaled.to_integral_value():
            raise DomainError(ErrorCode.INVALID_AMOUNT,
                              f"{cur.code} has {cur.exponent} decimal places", "amount")
        return int(scaled)
    return int(scaled.quantize(Decimal(1), rounding=rounding))


def format_amount(amount_minor: int, cur: Currency) -> str:
    """Minor units as a major-unit string with the currency's exponent: 1234 CNY -> '12.34'."""
    return str(Decimal(amount_minor).scaleb(-cur.exponent))


def bps_of(amount_minor: int, rate_bps: int, *, rounding: str = ROUND_HALF_EVEN) -> int:
    """``amount * rate_bps / 10_000`` rounded with the named rounding (banker's by default)."""
    exact = Decimal(amount_minor) * Decimal(rate_bps) / Decimal(BPS_DENOMINATOR)
    return int(exact.quantize(Decimal(1), rounding=rounding))


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights``; the parts always sum to ``total``.

    Largest-remainder method: every part gets the floor of its exact share, then the units left
    over go one each to the parts with the largest remainders, earlier parts winning ties. Works
    for negative totals (the split of -7 is the negation of the split of 7).
    """
    assert isinstance(total, int) and not isinstance(total, bool)
    assert weights, "allocate needs at least one weight"
    assert all(isinstance(w, int) and w >= 0 for w in weights), "weights are non-negative ints"
    weight_sum = sum(weights)
    assert weight_sum > 0, "at least one weight must be positive"
    if total < 0:
        return [-part for part in allocate(-total, weights)]
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        floors[i] += 1
    assert sum(floors) == total
    assert all(0 <= part for part in floors)
    return floors
