"""The invalid-spec generator (specgen) itself: enough cases, each one a refusal of the operator, every
refusal of the recipe's validators reached, valid bases; and the operator's quantity twin."""

from __future__ import annotations

import ast
import collections
from decimal import Decimal
from pathlib import Path

import pytest
import specgen

from conch.api import quantity
from model_repo_builder import recipe

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_bases_are_valid() -> None:
    for base_id, spec in specgen.BASES.items():
        assert specgen.operator_refuses(spec) is None, base_id


def test_at_least_500_cases_with_unique_names_and_every_mutation_used() -> None:
    cases = specgen.cases()
    assert len(cases) >= 500
    names = [c.obj["metadata"]["name"] for c in cases]
    assert len(set(names)) == len(names) and len({c.id for c in cases}) == len(cases)
    used = collections.Counter(c.id.split("/", 1)[1] for c in cases)
    assert [m.id for m in specgen.MUTATIONS if m.id not in used] == [], "a mutation no base is refused with"


def test_every_case_is_refused_by_the_operator_unless_admission_only() -> None:
    admission_only = {m.id for m in specgen.MUTATIONS if m.admission_only}
    accepted = [
        c.id
        for c in specgen.cases()
        if c.id.split("/", 1)[1] not in admission_only and specgen.operator_refuses(c.obj["spec"]) is None
    ]
    assert accepted == [], "cases the operator admits (a lost refusal, or a mutation missing valid_on)"


def test_declared_valid_combinations_are_valid() -> None:
    """valid_on is a claim too: the mutation applied to each of those bases is a spec the operator takes."""
    declared = [(m, b) for m in specgen.MUTATIONS for b in m.valid_on]
    assert declared, "no mutation declares a base it is valid on"
    for mut, base_id in declared:
        spec = specgen.BASES[base_id]
        obj = specgen.mutate(specgen._object("x", spec), mut.changes)
        assert specgen.operator_refuses(obj["spec"]) is None, f"{base_id}/{mut.id}"


def _validator_messages() -> list[str]:
    """The literal start of every `raise ValueError(...)` inside the recipe's model validators (the
    whole recipe's in recipe.py, a section's own in recipe_sections.py)."""
    found = []
    for module in ("recipe.py", "recipe_sections.py"):
        found += _module_validator_messages(ast.parse((ROOT / "model_repo_builder" / module).read_text()))
    return found


def _module_validator_messages(tree: ast.Module) -> list[str]:
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or not any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "model_validator"
            for d in fn.decorator_list
        ):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                arg = node.exc.args[0]
                parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                first = parts[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str)
                found.append(first.value)
    return found


def test_every_recipe_refusal_has_a_generated_case() -> None:
    """Walk the recipe's validators: each refusal message is what some generated case is refused with."""
    messages = _validator_messages()
    assert len(messages) >= 10, messages
    refusals = [specgen.operator_refuses(c.obj["spec"]) or "" for c in specgen.cases()]
    missing = [m for m in messages if not any(m in r for r in refusals)]
    assert missing == [], f"recipe refusals without a generated (so apiserver-checked) case: {missing}"
    assert recipe.Recipe.model_fields  # the module the walk read is the one the operator imports


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2Gi", Decimal(2 * 1024**3)), ("1e3", Decimal(1000)),
     ("1E", Decimal(10**18)), ("1Ei", Decimal(1024**6)), (".5", Decimal("0.5")), ("m", Decimal(0)),
     (4, Decimal(4)), ("100n", Decimal("1e-7"))],
)  # fmt: skip
def test_quantity_values(text: int | str, value: Decimal) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize("text", ["lots", "1.2.3", "1x", "", "1 Gi", "0x10", "1ki", "--1", "1e", "1e-"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity.parse(text)


def test_resources_twin() -> None:
    with pytest.raises(ValueError, match=r"above limits\.cpu"):
        quantity.check_resources({"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}})
    with pytest.raises(ValueError, match="limits and requests only"):
        quantity.check_resources({"claims": {}})
    with pytest.raises(ValueError, match="negative"):
        quantity.check("-1m")
    ok = {"requests": {"cpu": "500m", "memory": 1000}, "limits": {"cpu": 1, "memory": "1Ki"}}
    assert quantity.check_resources(ok) is ok
