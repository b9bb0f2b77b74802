"""Canonical JSON has one home in the builder, and the hashes written with it did not move."""

from __future__ import annotations

import pytest

from model_repo_builder import canonical
from model_repo_builder.recipe import Recipe, canonical_json, text_quantize_default
from model_repo_builder.store.repository import build_key

pytestmark = pytest.mark.unit


def test_canonical_form() -> None:
    assert (
        canonical.dumps({"b": [1, 2], "a": {"y": None, "x": "é"}})
        == '{"a":{"x":"\\u00e9","y":null},"b":[1,2]}'
    )


def test_build_keys_are_those_of_the_flat_builder() -> None:
    """Values computed before the builder was split into packages (a changed key rebuilds everything)."""
    tensor = build_key("sha256:" + "ab" * 32, Recipe(), "0.1.0", "model")
    assert tensor == "669ddda0ee01a58f712727278c2b8b630bda3c493e8bf46a1d5f7d41e9d19088"
    text = Recipe.model_validate({"text": {"task": "text-classification"}, "fallback": ["fp16"]})
    assert build_key("sha256:" + "cd" * 32, text, "0.1.0", "minilm") == (
        "054f9bc1efe5486f7a28cb103aaa699f8e90ce92da65daebd56b2bf814307115"
    )


def test_a_text_recipe_without_quantize_takes_the_one_default() -> None:
    text = Recipe.model_validate({"text": {"task": "feature-extraction"}})
    assert text.quantize == text_quantize_default()
    given = Recipe.model_validate({"text": {"task": "feature-extraction"}, "quantize": {"mode": "fp16"}})
    assert given.quantize.mode == "fp16"
    assert '"smoothAlpha":0.7' in canonical_json(text)
