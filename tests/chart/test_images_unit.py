"""Static checks of the images' Dockerfiles and kind-config.yaml against the chart and the operator."""

from __future__ import annotations

import re

import pytest
import yaml

from .helmrun import CHART, ROOT

pytestmark = pytest.mark.unit

IMAGES = ROOT / "images"


def _final_stage(dockerfile: str) -> str:
    return (IMAGES / dockerfile).read_text().rsplit("\nFROM ", 1)[1]


def test_operator_image_runs_as_the_chart_user_without_torch() -> None:
    text = (IMAGES / "operator.Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert '".[operator]"' in text and "builder]" not in text and "torch ==" not in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert uid == 65532
    assert re.search(rf"^USER {uid}:{uid}$", _final_stage("operator.Dockerfile"), re.M)
    assert '"conch-operator"' in text


def test_builder_image_is_non_root() -> None:
    text = (IMAGES / "builder.Dockerfile").read_text()
    assert '".[builder]"' in text
    user = re.search(r"^USER (\d+):(\d+)$", _final_stage("builder.Dockerfile"), re.M)
    assert user is not None and int(user.group(1)) != 0


def test_kind_config_has_a_gpu_worker() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker"]
    assert config["nodes"][1]["labels"]["nvidia.com/gpu.present"] == "true"
