"""Kubernetes resource quantities ("500m", "2Gi", 4) checked in Python as the apiserver checks them.

The CRD validates quantities with CEL (`isQuantity`, `quantity(...).compareTo`, see rules.QUANTITY and
rules.RESOURCES); this is the operator's twin, so a spec the operator parses is one the apiserver
admitted and a Deployment or Job write never fails on `cpu: lots` or requests above limits. It is
also the operator's only quantity parser: apply.py compares what it wants with what the apiserver
stored ("1000m" comes back as "1") with it. It is written here rather than taken from
`kubernetes.utils.parse_quantity` because the api package is imported without the `kubernetes`
package (crdgen, the builder's tests); tests check the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# Sign, a decimal number, then a binary suffix (Ki..Ei), a decimal suffix (n..E) or a decimal exponent:
# what k8s.io/apimachinery's resource.ParseQuantity (CEL's isQuantity) accepts, down to its corners
# ("m", "." and "e3" are quantities of it: missing digits read as 0).
PATTERN = re.compile(r"^([+-]?[0-9]*\.?[0-9]*)((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL.update({p: Decimal(1000) ** (i + 1) for i, p in enumerate("kMGTPE")})
KINDS = ("limits", "requests")


def parse(value: int | str) -> Decimal:
    """The quantity's value (ValueError when it is not a quantity)."""
    if isinstance(value, int):
        return Decimal(value)
    match = PATTERN.match(value)
    if match is None or not value:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2Gi, 4)")
    digits, suffix = match.group(1), match.group(2) or ""
    number = Decimal(digits) if any(c.isdigit() for c in digits) else Decimal(0)
    if suffix[:1] in ("e", "E") and len(suffix) > 1 and suffix not in _BINARY:
        return number * Decimal(10) ** int(suffix[1:])
    return number * (_BINARY.get(suffix) or _DECIMAL[suffix])


def value_of(raw: Any) -> Decimal | None:
    """The quantity `raw` denotes, or None when it is none (not an int or a string, a bool, no parse)."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        return None
    try:
        return parse(raw)
    except (ValueError, ArithmeticError):
        return None


def check(value: int | str) -> int | str:
    """A non-negative quantity, unchanged (pydantic after-validator)."""
    if parse(value) < 0:
        raise ValueError(f"{value!r}: a resource quantity must not be negative")
    return value


def between(low: str, high: str) -> Callable[[int | str], int | str]:
    """A pydantic after-validator: a quantity from `low` to `high` (the twin of rules.quantity_between)."""
    least, most = parse(low), parse(high)

    def check_between(value: int | str) -> int | str:
        if not least <= parse(value) <= most:
            raise ValueError(f"{value!r} must be a quantity from {low} to {high}")
        return value

    return check_between


def binary(count: int) -> str:
    """`count` (bytes) as a quantity in the largest binary unit that holds it exactly ("200Gi", "1536Ki")."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_BINARY[suffix])
        if count and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)


def check_resources(value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Only limits and requests, and no request above its limit (pydantic after-validator)."""
    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        raise ValueError(f"resources takes limits and requests only, not {unknown}")
    limits, requests = value.get("limits", {}), value.get("requests", {})
    for name, request in requests.items():
        if name in limits and parse(request) > parse(limits[name]):
            raise ValueError(f"requests.{name} {request} is above limits.{name} {limits[name]}")
    return value
