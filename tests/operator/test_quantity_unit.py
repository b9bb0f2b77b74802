"""One quantity parser (conch.api.quantity): every suffix, e-notation and plain numbers, in agreement
with the kubernetes package's parse_quantity; and apply.py's comparison reading through it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from kubernetes.utils import parse_quantity

from conch import apply
from conch.api import quantity

pytestmark = pytest.mark.unit

TABLE = [
    ("100n", Decimal("1e-7")),
    ("5u", Decimal("0.000005")),
    ("250m", Decimal("0.25")),
    ("2k", Decimal(2000)),
    ("3M", Decimal(3_000_000)),
    ("1G", Decimal(10**9)),
    ("1Ki", Decimal(1024)),
    ("128Mi", Decimal(128 * 2**20)),
    ("1.5Gi", Decimal(3 * 2**29)),
    ("2Ti", Decimal(2 * 2**40)),
    ("1e3", Decimal(1000)),
    ("2.5E-3", Decimal("0.0025")),
    ("12e+2", Decimal(1200)),
    ("4", Decimal(4)),
    ("0.5", Decimal("0.5")),
    ("-1", Decimal(-1)),
    ("+7", Decimal(7)),
    (3, Decimal(3)),
]


@pytest.mark.parametrize(("raw", "value"), TABLE)
def test_parse_table(raw: int | str, value: Decimal) -> None:
    assert quantity.parse(raw) == value
    assert quantity.value_of(raw) == value


@pytest.mark.parametrize(("raw", "value"), TABLE)
def test_agrees_with_the_kubernetes_package(raw: int | str, value: Decimal) -> None:
    assert parse_quantity(raw) == value == quantity.parse(raw)


@pytest.mark.parametrize("raw", ["lots", "1ki", "1x", "", True, 1.5, None, ["1"]])
def test_value_of_is_none_for_what_is_no_quantity(raw: object) -> None:
    assert quantity.value_of(raw) is None


@pytest.mark.parametrize(
    ("want", "have", "same"),
    [("1000m", "1", True), ("1Gi", "1073741824", True), ("1000000n", "1m", True), ("1u", "1000n", True),
     (2, "2", True), ("500m", "0.4", False), ("M", "G", False), ("Never", "Never", True), (True, 1, False)],
)  # fmt: skip
def test_apply_compares_quantities_by_value(want: object, have: object, same: bool) -> None:
    assert apply.matches({"v": want}, {"v": have}) is same
