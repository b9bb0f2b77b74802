"""Authenticated inference end to end (spec.auth, the auth proxy in the serving pod): the helm-installed
operator with the chart's RBAC, the node agent running Triton behind `conch-gateway auth-proxy`, tokens
in a Secret the user names. Without a token HTTP is 401 and gRPC UNAUTHENTICATED, with one they answer;
probes and Triton's metrics port need none; refusals are counted on the proxy's metrics port. The
token is rotated under a bounded load (add a second key, move the load to it, remove the first) with no
failed request, and no token shows in the pod spec, Events, status or any log."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as triton_grpc
from chart import helmrun
from conftest import Cluster, NodeAgent, wait_for
from tritonclient.utils import InferenceServerException

from tests.support import digits_model

from .test_end_to_end import MD, V2, Ns, modeldeployment, ready_pod_ips, wait_serving

pytestmark = pytest.mark.e2e
SECRET = "team-tokens"
FIRST, SECOND = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
BODY = json.dumps(
    {"inputs": [{"name": digits_model.INPUT, "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
).encode()
MAX_REQUESTS = 3000  # the load's bound


def post(ip: str, path: str, token: str | None, body: bytes | None = BODY) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"http://{ip}:8000{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Load(threading.Thread):
    """Inference requests one after another with the current token, until stopped (or MAX_REQUESTS)."""

    def __init__(self, ip: str, token: str) -> None:
        super().__init__(daemon=True)
        self.ip, self.token = ip, token
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.sent < MAX_REQUESTS:
            token = self.token
            try:
                code = post(self.ip, f"/v2/models/{MD}/infer", token)
            except OSError as exc:
                code, detail = 0, repr(exc)
            else:
                detail = str(code)
            self.sent += 1
            if code != 200:
                self.failed += 1
                self.failures.append(f"{'first' if token == FIRST else 'second'} token: {detail}")
            time.sleep(0.01)

    def more(self, n: int, timeout: float = 60) -> None:
        """Wait until `n` more requests went out (every request in flight before has finished)."""
        target = self.sent + n
        wait_for(f"{n} more requests", lambda: self.sent >= target, timeout, every=0.1)


def token_secret(data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "type": "Opaque",
        "data": encoded,
    }


def grpc_code(ip: str, token: str | None) -> str:
    client = triton_grpc.InferenceServerClient(f"{ip}:8001")
    headers = {"authorization": f"Bearer {token}"} if token else None
    try:
        client.get_model_metadata(MD, headers=headers)
    except InferenceServerException as exc:
        return str(exc.status())
    finally:
        client.close()
    return "OK"


def refusals(ip: str, api: str, reason: str) -> float:
    text = urllib.request.urlopen(f"http://{ip}:8003/metrics", timeout=5).read().decode()
    label = f'conch_auth_refusals_total{{api="{api}",reason="{reason}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(label))


def test_tokens_required_rotated_under_traffic_and_never_shown(
    cluster: Cluster, namespace: str, node_agent: NodeAgent, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    model, _ = digits_model.train()
    digits_model.save(model, store / "models" / "digits.pt2")
    with helmrun.operator_as_release(cluster, namespace, tmp_path) as operator_log:
        helmrun.model_store(cluster, namespace, store)
        k = Ns(cluster, namespace)
        k.apply(token_secret({"a": FIRST}))
        md = modeldeployment("v1", V2, node_agent)
        md["spec"]["auth"] = {"mode": "token", "secretName": SECRET}
        k.apply(md)
        logs = [operator_log, node_agent.log]
        status = wait_serving(
            k, MD, "v1", 300, lambda: [*logs, *sorted(node_agent.state.glob("pods/*/*.log"))]
        )
        assert status["auth"] == {"mode": "token", "secretName": SECRET}
        ip = wait_for("a Ready v1 pod", lambda: ready_pod_ips(k, "v1"), 60)[0]

        # the door: tokens for inference, metadata, statistics and config; none for probes and metrics
        for path, body in [(f"/v2/models/{MD}/infer", BODY), (f"/v2/models/{MD}", None),
                           (f"/v2/models/{MD}/stats", None), (f"/v2/models/{MD}/config", None)]:  # fmt: skip
            assert post(ip, path, None, body) == 401, path
            assert post(ip, path, "not-a-token", body) == 401, path
            assert post(ip, path, FIRST, body) == 200, path
        assert post(ip, f"/v2/models/{MD}/ready", None, None) == 200
        assert grpc_code(ip, None) == "StatusCode.UNAUTHENTICATED"
        assert grpc_code(ip, FIRST) == "OK"
        assert refusals(ip, "http", "missing") >= 4 and refusals(ip, "grpc", "missing") >= 1
        assert b"nv_inference_request_success" in urllib.request.urlopen(f"http://{ip}:8002/metrics").read()

        # rotation under traffic: no failed request
        load = Load(ip, FIRST)
        load.start()
        try:
            load.more(20)
            k.apply(token_secret({"a": FIRST, "b": SECOND}))
            wait_for(
                "the second token accepted", lambda: post(ip, f"/v2/models/{MD}", SECOND, None) == 200, 60
            )
            load.token = SECOND
            load.more(20)
            k.apply(token_secret({"b": SECOND}))
            wait_for("the first token refused", lambda: post(ip, f"/v2/models/{MD}", FIRST, None) == 401, 60)
            load.more(20)
        finally:
            load.stop.set()
            load.join(30)
        print(f"rotation under load: {load.sent} requests, {load.failed} failed")
        assert load.failed == 0, load.failures[:5]
        assert load.sent >= 60

        # no token anywhere it could be read back
        shown = {
            "pods": cluster.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout,
            "deployments": cluster.kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout,
            "events": cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout,
            "modeldeployment": json.dumps(k.get("md", MD)),
            **{
                str(p): p.read_text(errors="replace") for p in [*logs, *node_agent.state.glob("pods/*/*.log")]
            },
        }
        assert any("auth-proxy" in str(name) for name in shown), "the proxy's log was read"
        for name, text in shown.items():
            for token in (FIRST, SECOND):
                assert token not in text, f"a token shows in {name}"
