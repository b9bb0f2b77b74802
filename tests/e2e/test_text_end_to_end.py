"""A text model through the whole path: kubectl apply examples/cpu-minilm.yaml -> the real builder
builds all-MiniLM-L6-v2 (int8 + SmoothQuant) -> a real tritonserver loads the ensemble on the node
agent -> Ready -> HTTP and gRPC text requests (sentences outside the validation set) answer like the
original model -> an fp32 version rolls out -> editing the version back rolls back with no rebuild.

The operator runs locally against the cluster; traffic goes only to the pod's own 127.65.x.y address.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from builder import textmodels
from chart import helmrun
from conftest import Cluster, NodeAgent, wait_for

from . import test_end_to_end as e2e
from .test_end_to_end import Ns

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-minilm.yaml"
MD = "minilm-cpu"
LABEL = f"serving.conch.dev/modeldeployment={MD}"
SENTENCES = [
    "The ferry to the island runs twice a day in winter.",
    "Gradient checkpointing trades compute for memory during training.",
    "My neighbour's dog barks whenever the postman arrives.",
    "The committee postponed its decision until next spring.",
]


def _spec(agent: NodeAgent, version: str, quantize: dict[str, Any] | None) -> dict[str, Any]:
    md = yaml.safe_load(EXAMPLE.read_text())
    md["spec"]["version"] = version
    for section in ("build", "serving"):
        md["spec"].setdefault(section, {}).update(agent.scheduling())
    md["spec"]["serving"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    md["spec"]["serving"]["startupTimeoutSeconds"] = 300
    md["spec"]["rollout"] = {"progressDeadlineSeconds": 300}
    if quantize is not None:
        md["spec"]["compression"] = {**copy.deepcopy(md["spec"]["compression"]), "quantize": quantize}
    return dict(md)


def _text(texts: list[str]) -> np.ndarray:
    return np.array([[t.encode()] for t in texts], dtype=object)


def embed(ip: str, texts: list[str], protocol: str = "http") -> np.ndarray:
    """Embeddings from the pod's ensemble over HTTP (8000) or gRPC (8001)."""
    if protocol == "grpc":
        grpc_client = triton_grpc.InferenceServerClient(f"{ip}:8001")
        inp = triton_grpc.InferInput("text", [len(texts), 1], "BYTES")
        inp.set_data_from_numpy(_text(texts))
        return np.asarray(grpc_client.infer("minilm", [inp]).as_numpy("embedding"))
    client = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=60)
    request = triton_http.InferInput("text", [len(texts), 1], "BYTES")
    request.set_data_from_numpy(_text(texts))
    return np.asarray(client.infer("minilm", [request]).as_numpy("embedding"))


def test_text_model_apply_serve_rollout_rollback(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(textmodels.minilm_dir(), store / "models" / "all-MiniLM-L6-v2")
    reference = textmodels.reference_embeddings(SENTENCES)
    with helmrun.operator_as_release(cluster, namespace, tmp_path, chart_crds=True) as operator_log:
        helmrun.model_store(cluster, namespace, store)
        _serve_roll_out_and_back(Ns(cluster, namespace), node_agent, store, reference, operator_log)


def _serve_roll_out_and_back(
    k: Ns, node_agent: NodeAgent, store: Path, reference: np.ndarray, operator: Path
) -> None:
    def wait_serving(version: str) -> dict[str, Any]:
        def logs() -> list[Path]:
            return [operator, *sorted(node_agent.state.glob("pods/*/*.log"))]

        return e2e.wait_serving(k, MD, version, 420, logs)

    k.apply(_spec(node_agent, "1", None))
    status = wait_serving("1")
    v1 = status["history"][0]
    assert v1["summary"]["gate"]["cosine"] >= 0.995
    ip = wait_for("a Ready pod", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    assert textmodels.mean_cosine(embed(ip, SENTENCES), reference) >= 0.995
    assert textmodels.mean_cosine(embed(ip, SENTENCES, "grpc"), reference) >= 0.995

    k.apply(_spec(node_agent, "2-fp32", {"mode": "none"}))
    wait_serving("2-fp32")
    ip2 = wait_for("a Ready fp32 pod", lambda: e2e.ready_pod_ips(k, "2-fp32", MD), 60)[0]
    assert textmodels.mean_cosine(embed(ip2, SENTENCES), reference) >= 0.999

    k.apply(_spec(node_agent, "1", None))
    back = wait_serving("1")
    assert back["history"][0] == v1
    assert len(k.items("jobs", LABEL)) == 2, "rolling back rebuilt version 1"
    ip3 = wait_for("a Ready pod of version 1 again", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    assert textmodels.mean_cosine(embed(ip3, SENTENCES), reference) >= 0.995
    build = json.loads((store / "repositories" / v1["buildKey"] / "build.json").read_text())
    assert build["text"]["task"] == "feature-extraction" and build["compressionRatio"] >= 3.8
