"""A generative model through the whole path: kubectl apply examples/cpu-smollm2.yaml -> the real builder
builds SmolLM2-135M-Instruct from its GGUF file (int4 weight-only, gated on perplexity and greedy
agreement) -> on the node agent a real tritonserver loads the decoupled model and the OpenAI gateway runs
beside it -> Ready (a real one-token generation) -> the `openai` client chats, streamed and whole -> an
int8-weight version rolls out -> editing the version back rolls back with no rebuild, while streams
run on the int8 pod: none is cut when that pod is deleted (each that began ends with its finish reason)
-> a canary with another model's weights (SmolLM2's architecture with fresh weights, fp32: it passes its
own build gate) is aborted by the quality analysis, its greedy agreement with version 1 in the condition,
while version 1 keeps serving.

The store is the session's `llm_store`, shared with the examples test: the same (source, recipe) is built
once per session. Traffic goes only to the pod's own 127.65.x.y address.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from chart import helmrun
from conftest import Cluster, NodeAgent, wait_for

from tests.support import llm

from . import test_end_to_end as e2e
from .test_end_to_end import Ns

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-smollm2.yaml"
MD, MODEL = "smollm2-cpu", "smollm2"
LABEL = f"serving.conch.dev/modeldeployment={MD}"
OTHER_WEIGHTS = "models/smollm2-other-weights"
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


STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
STREAMERS = 3


@dataclass
class Streams:
    """Streams sent one after another by STREAMERS threads to one pod until told to stop."""

    ip: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: list[tuple[float, float, str | None, int, str]] = field(default_factory=list)  # start, end, ...
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        client = _client(self.ip)
        while not self.stop.is_set():
            start, finish, pieces, error = time.monotonic(), None, 0, ""
            try:
                stream = client.chat.completions.create(
                    model=MODEL, messages=STORY, temperature=0, max_tokens=96, stream=True
                )
                for chunk in stream:
                    if chunk.choices:
                        pieces += 1 if chunk.choices[0].delta.content else 0
                        finish = chunk.choices[0].finish_reason or finish
            except Exception as exc:  # recorded: a stream that had begun must not end this way
                error = repr(exc)[:300]
            with self.lock:
                self.done.append((start, time.monotonic(), finish, pieces, error))


@pytest.fixture
def store(llm_store: Path, smollm2_model: Any) -> Path:
    """The session's LLM store, with another model's weights beside SmolLM2's GGUF file."""
    llm.other_weights(smollm2_model, llm_store / OTHER_WEIGHTS)
    return llm_store


def test_generation_apply_chat_rollout_rollback(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, store: Path, tmp_path: Path
) -> None:
    llm_store = store
    with helmrun.operator_as_release(cluster, namespace, tmp_path, chart_crds=True) as operator_log:
        helmrun.model_store(cluster, namespace, llm_store)
        _serve_roll_out_and_back(Ns(cluster, namespace), node_agent, llm_store, operator_log)
        _other_weights_canary_is_aborted(Ns(cluster, namespace), node_agent)


def _other_weights_canary_is_aborted(k: Ns, node_agent: NodeAgent) -> None:
    md = _spec(node_agent, "3-other", "none")
    md["spec"]["model"]["source"] = {"path": OTHER_WEIGHTS}
    md["spec"]["rollout"] |= {"strategy": "canary", "canary": {
        "steps": [{"weight": 50}], "analysis": {"quality": {"minGreedyAgreement": 0.8}}}}  # fmt: skip
    k.apply(md)

    def status() -> dict[str, Any]:
        return dict(k.get("modeldeployment", MD).get("status") or {})

    def aborted() -> dict[str, Any] | None:
        cond = next((c for c in status().get("conditions", []) if c["type"] == "Degraded"), {})
        ok = cond.get("reason") == "AnalysisFailed" and "canary 3-other " in cond.get("message", "")
        return cond if ok else None

    degraded = wait_for("the other weights' canary aborted by quality", aborted, 900, every=1)
    assert "greedyAgreement" in degraded["message"], degraded
    st = status()
    assert st["currentVersion"] == "1" and st["failedVersion"] == "3-other", st
    built = next(h for h in st["history"] if h["version"] == "3-other")
    assert built["summary"]["gate"]["passed"] is True  # its own gate could not tell
    (greedy,) = [v for v in st["canary"]["analysis"] if v["name"] == "greedyAgreement"]
    assert greedy["passed"] is False and greedy["value"] < 0.8, st["canary"]
    print(f"other weights' canary: greedyAgreement {greedy['value']} ({degraded['message'][:200]})")
    ip = wait_for("version 1 still Ready", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    assert "Paris" in _chat(ip)


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

    streams = Streams(ip2)
    threads = [threading.Thread(target=streams.run, daemon=True) for _ in range(STREAMERS)]
    for t in threads:
        t.start()
    wait_for("streams flowing from the int8 pod", lambda: len(streams.done) >= STREAMERS, 120)
    k.apply(_spec(node_agent, "1", None))
    (old,) = [p for p in k.items("pods", LABEL) if p["status"].get("podIP") == ip2]

    def old_pod_leaving() -> bool:
        pods = [p for p in k.items("pods", LABEL) if p["metadata"]["name"] == old["metadata"]["name"]]
        return not pods or bool(pods[0]["metadata"].get("deletionTimestamp"))

    wait_for("the int8 pod deleted by the rollback", old_pod_leaving, 300, every=0.2)
    deleted = time.monotonic()
    streams.stop.set()  # no stream starts after this; the ones in flight must end whole
    for t in threads:
        t.join(timeout=120)
    begun = [s for s in streams.done if s[3] > 0]
    cut = [s for s in begun if s[2] not in ("stop", "length") or s[4]]
    assert cut == [], f"streams cut by the rollback: {cut}"
    straddling = [s for s in begun if s[0] < deleted < s[1]]
    assert straddling, f"no stream was in flight when the pod was deleted: {streams.done[-STREAMERS:]}"
    back = wait_serving("1")
    assert back["history"][0] == v1
    assert len(k.items("jobs", LABEL)) == 2, "rolling back rebuilt version 1"
    ip3 = wait_for("a Ready pod of version 1 again", lambda: e2e.ready_pod_ips(k, "1", MD), 60)[0]
    assert "Paris" in _chat(ip3)
    build = json.loads((store / "repositories" / v1["buildKey"] / "build.json").read_text())
    assert build["text"]["task"] == "text-generation" and build["recipe"]["quantize"]["mode"] == "int4-weight"
