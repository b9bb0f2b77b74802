"""Image references (spec.serving.image, spec.build.image) follow distribution/reference's grammar.

The tables live in specgen: the cluster suite checks the apiserver (Go's RE2) agrees on each."""

from __future__ import annotations

import re

import pydantic
import pytest
import specgen

from conch.api import crdgen, imageref, types

pytestmark = pytest.mark.unit
GOOD, BAD = specgen.IMAGE_REFERENCES, specgen.BAD_IMAGE_REFERENCES


@pytest.mark.parametrize("ref", GOOD)
def test_references_of_the_grammar_are_admitted(ref: str) -> None:
    assert re.fullmatch(imageref.PATTERN, ref)
    assert types.Serving.model_validate({"image": ref}).image == ref
    assert types.Build.model_validate({"image": ref}).image == ref


@pytest.mark.parametrize("ref", BAD)
def test_references_outside_the_grammar_are_refused(ref: str) -> None:
    assert not re.fullmatch(imageref.PATTERN, ref)
    for model in (types.Serving, types.Build):
        with pytest.raises(pydantic.ValidationError, match="image"):
            model.model_validate({"image": ref})


def test_the_crd_carries_the_pattern() -> None:
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for section in ("serving", "build"):
        assert spec["properties"][section]["properties"]["image"]["pattern"] == imageref.PATTERN
