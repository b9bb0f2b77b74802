"""A generative model through the whole path: kubectl apply examples/cpu-smollm2.yaml -> the real builder
builds SmolLM2-135M-Instruct from its GGUF file (int4 weight-only, gated on perplexity and greedy
agreement) -> on the node agent a real tritonserver loads the decoupled model and the OpenAI gateway runs
beside it -> Ready (a real one-token generation) -> the `openai` client chats, streamed and whole -> an
int8-weight version rolls out -> editing the version back rolls back with no rebuild.

The store is the session's `llm_store`, shared with the examples test: the same (source, recipe) is built
once per session. Traffic goes only to the pod's own 127.65.x.y address.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from chart import helmrun
from conftest import Cluster, NodeAgent, wait_for

from . import test_end_to_end as e2e
from .test_end_to_end import Ns

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-smollm2.yaml"
MD, MODEL = "smollm2-cpu", "smollm2"
LABEL = f"serving.conch.dev/modeldeployment={MD}"
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _spec(agent: NodeAgent, version: str, quantize: str | None) -> dict[str, Any]:
    """The example as written, on the agent's node; `quantize` replaces its precision ladder."""
    md = yaml.safe_load(EXAMPLE.read_text())
    md["spec"]["version"] = version
    for section in ("build", "serving"):
        md["spec"].setdefault(section, {}).update(agent.scheduling())
    md["spec"]["serving"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    md["spec"]["serving"]["startupTimeoutSeconds"] = 300
    md["spec"]["rollout"] = {"progressDeadlineSeconds": 300}
    if quantize is not None:
        md["spec"]["compression"]["quantize"] = {"mode": quantize}
        md["spec"]["compression"].pop("fallback")
    return dict(md)


def _client(ip: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{ip}:9000/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(ip: str) -> str:
    """The greedy answer, whole and streamed (they must agree), through the pod's OpenAI port."""
    client = _client(ip)
    whole = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    answer = whole.choices[0].message.content or ""
    stream = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=24, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 3 and "".join(pieces) == answer
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    return answer


def test_generation_apply_chat_rollout_rollback(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, llm_store: Path, tmp_path: Path
) -> None:
    with helmrun.operator_as_release(cluster, namespace, tmp_path, chart_crds=True) as operator_log:
        helmrun.model_store(cluster, namespace, llm_store)
        _serve_roll_out_and_back(Ns(cluster, namespace), node_agent, llm_store, operator_log)


def _serve_roll_out_and_back(k: Ns, node_agent: NodeAgent, store: Path, operator: Path) -> None:
    def wait_serving(version: str) -> dict[str, Any]:
        def logs() -> list[Path]:
            return [operator, *sorted(node_agent.state.glob("pods/*/*.log"))]

        return e2e.wait_serving(k, MD, version, 600, logs)

    k.apply(_spec(node_agent, "1", None))
    status = wait_serving("1")
    v1 = status["history"][0]
    assert status["endpoints"]["openai"] == f"http://{MD}.{k.ns}.svc:9000/v1"
    gate = v1["summary"]["gate"]
    assert gate["perplexityRatio"] <= 1.3 and gate["greedyAgreement"] >= 0.6
    ip = wait_for("a Ready pod", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    (pod,) = [p for p in k.items("pods", LABEL) if p["status"].get("podIP") == ip]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["triton", "openai"]
    assert "Paris" in _chat(ip)
    (card,) = _client(ip).models.list().data
    assert card.id == MODEL

    k.apply(_spec(node_agent, "2-int8", "int8-weight"))
    (v2,) = [h for h in wait_serving("2-int8")["history"] if h["version"] == "2-int8"]
    assert v2["summary"]["gate"]["greedyAgreement"] >= 0.8
    ip2 = wait_for("a Ready int8 pod", lambda: e2e.ready_pod_ips(k, "2-int8", MD), 60)[0]
    assert "Paris" in _chat(ip2)

    k.apply(_spec(node_agent, "1", None))
    back = wait_serving("1")
    assert back["history"][0] == v1
    assert len(k.items("jobs", LABEL)) == 2, "rolling back rebuilt version 1"
    ip3 = wait_for("a Ready pod of version 1 again", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    assert "Paris" in _chat(ip3)
    build = json.loads((store / "repositories" / v1["buildKey"] / "build.json").read_text())
    assert build["text"]["task"] == "text-generation" and build["recipe"]["quantize"]["mode"] == "int4-weight"
