"""Money: amounts are ints of minor units, conversions name their rounding, splits conserve."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lianjie.errors import DomainError, ErrorCode
from lianjie.money import (
    AMOUNT_MAX,
    Money,
    allocate,
    bps_of,
    check_amount,
    currency,
    currency_codes,
    format_amount,
    to_minor,
)

CNY = currency("CNY")
JPY = currency("JPY")
BHD = currency("BHD")


def _code(excinfo: pytest.ExceptionInfo[DomainError]) -> ErrorCode:
    return excinfo.value.code


# -- check_amount ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 2_500, AMOUNT_MAX])
def test_check_amount_accepts_positive_ints_up_to_the_max(value: int) -> None:
    assert check_amount(value) == value


def test_check_amount_refuses_one_past_the_max() -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(AMOUNT_MAX + 1)
    assert _code(exc) == ErrorCode.AMOUNT_TOO_LARGE
    assert exc.value.param == "amount"


@pytest.mark.parametrize("value", [0.1, 1.0, 100.0, float("nan"), float("inf")])
def test_check_amount_refuses_floats_even_whole_ones(value: float) -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(value)
    assert _code(exc) == ErrorCode.INVALID_AMOUNT
    assert "float" in exc.value.message


@pytest.mark.parametrize("value", [True, False])
def test_check_amount_refuses_bools(value: bool) -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(value, allow_zero=True)
    assert _code(exc) == ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize("value", ["100", Decimal(100), None, [100]])
def test_check_amount_refuses_non_ints(value: object) -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(value)
    assert _code(exc) == ErrorCode.INVALID_AMOUNT


def test_check_amount_zero_only_when_allowed() -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(0)
    assert _code(exc) == ErrorCode.INVALID_AMOUNT
    assert check_amount(0, allow_zero=True) == 0


@pytest.mark.parametrize("value", [-1, -AMOUNT_MAX])
@pytest.mark.parametrize("allow_zero", [False, True])
def test_check_amount_refuses_negatives(value: int, allow_zero: bool) -> None:
    with pytest.raises(DomainError) as exc:
        check_amount(value, "refund_amount", allow_zero=allow_zero)
    assert _code(exc) == ErrorCode.INVALID_AMOUNT
    assert exc.value.param == "refund_amount"


# -- currencies -----------------------------------------------------------------------------------

def test_currency_knows_its_exponent() -> None:
    assert (CNY.exponent, JPY.exponent, BHD.exponent) == (2, 0, 3)
    assert "CNY" in currency_codes() and currency_codes() == sorted(currency_codes())


@pytest.mark.parametrize("code", ["XXX", "cny", "", "CNY ", "RMB", None, 156])
def test_unknown_currency_is_refused_not_guessed(code: object) -> None:
    with pytest.raises(DomainError) as exc:
        currency(code)  # type: ignore[arg-type]
    assert _code(exc) == ErrorCode.UNKNOWN_CURRENCY
    assert exc.value.param == "currency"


def test_money_is_minor_units_with_a_currency() -> None:
    assert str(Money.of(1_234)) == "12.34 CNY"
    assert str(Money.of(1_234, "JPY")) == "1234 JPY"
    with pytest.raises(TypeError):
        Money(12.34, CNY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True, CNY)
    with pytest.raises(DomainError):
        Money.of(100, "XXX")


# -- to_minor -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "cur", "minor"), [
    ("12.34", CNY, 1_234),
    ("12.340", CNY, 1_234),  # trailing zeros are still exact
    ("0.01", CNY, 1),
    ("-1.23", CNY, -123),
    ("1e2", CNY, 10_000),
    ("1234", JPY, 1_234),
    ("1.234", BHD, 1_234),
    (Decimal("99.99"), CNY, 9_999),
])
def test_to_minor_exact(text: str | Decimal, cur: object, minor: int) -> None:
    assert to_minor(text, cur) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "cur"), [
    ("0.001", CNY), ("12.345", CNY), ("1.5", JPY), ("0.0001", BHD),
    ("1e-999999999", CNY),
    # 30 significant digits: the default decimal context (28) would round this to 1234 silently
    ("12.3400000000000000000000000001", CNY),
])
def test_to_minor_refuses_more_digits_than_the_currency_has(text: str, cur: object) -> None:
    with pytest.raises(DomainError) as exc:
        to_minor(text, cur)  # type: ignore[arg-type]
    assert _code(exc) == ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize(("text", "rounding", "minor"), [
    ("0.005", ROUND_HALF_EVEN, 0),
    ("0.015", ROUND_HALF_EVEN, 2),
    ("0.005", ROUND_HALF_UP, 1),
    ("0.019", ROUND_DOWN, 1),
    ("0.011", ROUND_UP, 2),
    ("-0.015", ROUND_HALF_EVEN, -2),
    ("12.34", ROUND_DOWN, 1_234),  # exact values are unchanged by any rounding
])
def test_to_minor_rounds_only_when_the_rounding_is_named(text: str, rounding: str,
                                                         minor: int) -> None:
    assert to_minor(text, CNY, rounding=rounding) == minor


@pytest.mark.parametrize("value", [0.1, 12.0, True, "abc", "", "nan", "inf", "-Infinity", None])
@pytest.mark.parametrize("rounding", [None, ROUND_HALF_EVEN])
def test_to_minor_refuses_what_is_not_a_finite_decimal(value: object,
                                                       rounding: str | None) -> None:
    with pytest.raises(DomainError) as exc:
        to_minor(value, CNY, rounding=rounding)  # type: ignore[arg-type]
    assert _code(exc) == ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize("rounding", [None, ROUND_HALF_EVEN])
def test_to_minor_bounds_the_result_by_amount_max(rounding: str | None) -> None:
    top = format_amount(AMOUNT_MAX, CNY)
    assert to_minor(top, CNY, rounding=rounding) == AMOUNT_MAX
    assert to_minor("-" + top, CNY, rounding=rounding) == -AMOUNT_MAX
    for text in (format_amount(AMOUNT_MAX + 1, CNY), "1e40", "-1e40", "1e999999999"):
        with pytest.raises(DomainError) as exc:
            to_minor(text, CNY, rounding=rounding)
        assert _code(exc) == ErrorCode.AMOUNT_TOO_LARGE


# -- format_amount and bps_of ---------------------------------------------------------------------

@pytest.mark.parametrize(("minor", "cur", "text"), [
    (1_234, CNY, "12.34"),
    (0, CNY, "0.00"),
    (5, CNY, "0.05"),
    (100, CNY, "1.00"),
    (-1_234, CNY, "-12.34"),
    (AMOUNT_MAX, CNY, "10000000000000.00"),
    (1_234, JPY, "1234"),
    (1, BHD, "0.001"),
])
def test_format_amount(minor: int, cur: object, text: str) -> None:
    assert format_amount(minor, cur) == text  # type: ignore[arg-type]


@given(st.integers(-AMOUNT_MAX, AMOUNT_MAX), st.sampled_from([CNY, JPY, BHD]))
def test_format_then_parse_round_trips(minor: int, cur: object) -> None:
    assert to_minor(format_amount(minor, cur), cur) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize(("amount", "bps", "rounding", "fee"), [
    (10_000, 60, ROUND_HALF_EVEN, 60),  # 0.6% of 100 yuan is 60 fen
    (10_001, 60, ROUND_HALF_EVEN, 60),  # 60.006 -> 60
    (25, 200, ROUND_HALF_EVEN, 0),  # 0.5 -> 0 (banker's: to even)
    (75, 200, ROUND_HALF_EVEN, 2),  # 1.5 -> 2
    (125, 200, ROUND_HALF_EVEN, 2),  # 2.5 -> 2
    (25, 200, ROUND_HALF_UP, 1),
    (199, 60, ROUND_UP, 2),  # 1.194 -> 2
    (199, 60, ROUND_DOWN, 1),
    (-75, 200, ROUND_HALF_EVEN, -2),
    (0, 60, ROUND_HALF_EVEN, 0),
    (AMOUNT_MAX, 10_000, ROUND_HALF_EVEN, AMOUNT_MAX),
])
def test_bps_of_names_its_rounding(amount: int, bps: int, rounding: str, fee: int) -> None:
    assert bps_of(amount, bps, rounding=rounding) == fee


@given(st.integers(0, AMOUNT_MAX), st.integers(0, 10_000))
def test_bps_of_is_within_half_a_unit_of_the_exact_fee(amount: int, bps: int) -> None:
    exact = Fraction(amount * bps, 10_000)
    assert abs(bps_of(amount, bps) - exact) <= Fraction(1, 2)
    assert 0 <= bps_of(amount, bps) <= amount


# -- allocate -------------------------------------------------------------------------------------

def test_allocate_worked_examples() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]  # the spare fen goes to the first
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate(7, [0, 1, 0]) == [0, 7, 0]
    assert allocate(10, [3, 7]) == [3, 7]
    assert allocate(5, [1, 1, 1, 1, 1, 1]) == [1, 1, 1, 1, 1, 0]
    assert allocate(0, [2, 5]) == [0, 0]
    assert allocate(101, [50, 30, 20]) == [51, 30, 20]  # 50.5 has the largest remainder


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [1.0]])
def test_allocate_refuses_bad_weights(weights: list[object]) -> None:
    with pytest.raises(AssertionError):
        allocate(100, weights)  # type: ignore[arg-type]


def test_allocate_refuses_a_float_total() -> None:
    with pytest.raises(AssertionError):
        allocate(1.0, [1, 1])  # type: ignore[arg-type]


totals = st.integers(-AMOUNT_MAX, AMOUNT_MAX)
weight_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=20).filter(any)


@given(totals, weight_lists)
def test_allocate_parts_sum_to_the_total(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total


@given(totals, weight_lists)
def test_allocate_is_deterministic(total: int, weights: list[int]) -> None:
    assert allocate(total, weights) == allocate(total, list(weights))


@given(totals, weight_lists)
def test_allocate_each_part_is_within_one_of_its_exact_share(total: int,
                                                             weights: list[int]) -> None:
    weight_sum = sum(weights)
    for part, w in zip(allocate(total, weights), weights, strict=True):
        assert abs(part - Fraction(total * w, weight_sum)) < 1


@given(totals, weight_lists)
def test_allocate_gives_zero_weights_nothing(total: int, weights: list[int]) -> None:
    for part, w in zip(allocate(total, weights), weights, strict=True):
        if w == 0:
            assert part == 0


@given(st.integers(0, AMOUNT_MAX), weight_lists)
def test_allocate_of_a_negative_total_is_the_negated_split(total: int,
                                                           weights: list[int]) -> None:
    assert allocate(-total, weights) == [-p for p in allocate(total, weights)]
    assert all(p >= 0 for p in allocate(total, weights))
