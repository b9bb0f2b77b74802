"""spec.auth rendered and decided: the proxy in front of Triton (and the gateway), the token Secret
generated once and read back, status naming the Secret and never a token, a loud word when auth is
off, and the operator's default for an unset spec.auth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_decide_unit import NAME, World, md_obj  # tests/operator is on the path (pytest rootdir)
from test_render_unit import owner as example_owner

from conch import snapshot
from conch.api import types
from conch.render import (
    analysis,
    authproxy,
    common,
    deployment,
    networkpolicy,
    secret,
    service,
    servicemonitor,
)

pytestmark = pytest.mark.unit
TOKEN = "fresh-t0ken-9f2a"  # what World passes decide as the fresh token


def with_auth(example: str, **auth: Any) -> common.Owner:
    o = example_owner(example)
    spec = o.spec.model_copy(update={"auth": types.Auth.model_validate(auth)})
    return common.Owner(o.name, o.namespace, o.uid, spec)


def pod_spec(o: common.Owner, model: str = "digits") -> dict[str, Any]:
    dep = deployment.render_deployment(o, deployment.Served("v1", "bk", model))
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_auth_off_renders_what_an_unset_auth_renders() -> None:
    unset = example_owner("cpu-digits")
    assert pod_spec(with_auth("cpu-digits", mode="none")) == pod_spec(unset)
    assert [c["name"] for c in pod_spec(unset)["containers"]] == ["triton"]


def test_the_proxy_takes_the_pod_s_ports_and_triton_moves_to_the_loopback() -> None:
    spec = pod_spec(with_auth("cpu-digits", mode="token"))
    containers = by_name(spec["containers"])
    assert list(containers) == ["triton", "auth-proxy"]
    triton, proxy = containers["triton"], containers["auth-proxy"]
    assert {"--http-port=18000", "--grpc-port=18001", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            "--metrics-port=8002"} <= set(triton["args"])  # fmt: skip
    assert [p["name"] for p in triton["ports"]] == ["metrics"]  # Prometheus scrapes Triton as before
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/models/digits/ready", "port": 8000}
    assert triton["livenessProbe"]["httpGet"]["port"] == triton["startupProbe"]["httpGet"]["port"] == 8000
    assert proxy["command"] == ["conch-gateway", "auth-proxy"]
    assert proxy["args"] == [
        "--tokens=/var/run/conch/inference-tokens", "--host=0.0.0.0", "--http=8000=127.0.0.1:18000",
        "--grpc=8001=127.0.0.1:18001", "--metrics-port=8003",
    ]  # fmt: skip
    assert [(p["name"], p["containerPort"]) for p in proxy["ports"]] == [
        ("http", 8000), ("grpc", 8001), ("auth-metrics", 8003)
    ]  # fmt: skip
    assert proxy["volumeMounts"] == [
        {"name": "inference-tokens", "mountPath": authproxy.TOKENS_MOUNT, "readOnly": True}
    ]
    assert proxy["securityContext"] == common.restricted_container_security()
    assert by_name(spec["volumes"])["inference-tokens"] == {
        "name": "inference-tokens", "secret": {"secretName": f"{NAME_OF['cpu-digits']}-inference-tokens"}
    }  # fmt: skip


NAME_OF = {"cpu-digits": example_owner("cpu-digits").name, "cpu-smollm2": example_owner("cpu-smollm2").name}


def test_a_named_secret_is_mounted_as_it_is() -> None:
    spec = pod_spec(with_auth("cpu-digits", mode="token", secretName="team-tokens"))
    assert by_name(spec["volumes"])["inference-tokens"]["secret"] == {"secretName": "team-tokens"}
    assert not authproxy.generated(with_auth("cpu-digits", mode="token", secretName="team-tokens"))


def test_the_openai_gateway_is_fronted_too() -> None:
    o = with_auth("cpu-smollm2", mode="token")
    containers = by_name(pod_spec(o, "smol")["containers"])
    assert list(containers) == ["triton", "openai", "auth-proxy"]
    gateway = containers["openai"]
    assert {"--triton-grpc=127.0.0.1:18001", "--host=127.0.0.1", "--port=19000"} <= set(gateway["args"])
    assert "ports" not in gateway
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 9000}
    assert "--openai=9000=127.0.0.1:19000" in containers["auth-proxy"]["args"]
    assert [p["name"] for p in containers["auth-proxy"]["ports"]] == [
        "http",
        "grpc",
        "openai",
        "auth-metrics",
    ]


def test_service_monitor_and_network_policy_carry_the_proxy_s_metrics() -> None:
    o = with_auth("cpu-digits", mode="token")
    ports = {p["name"]: p["port"] for p in service.render_service(o)["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002, "auth-metrics": 8003}
    spec = o.spec.model_copy(
        update={
            "monitoring": types.Monitoring.model_validate({"serviceMonitor": {"enabled": True}}),
            "serving": o.spec.serving.model_copy(
                update={"network_policy": types.NetworkPolicySpec(enabled=True)}
            ),
        }
    )
    o = common.Owner(o.name, o.namespace, o.uid, spec)
    monitor = servicemonitor.render_servicemonitor(o)
    assert monitor is not None and [e["port"] for e in monitor["spec"]["endpoints"]] == [
        "metrics",
        "auth-metrics",
    ]
    policy = networkpolicy.render_networkpolicy(o)
    assert policy is not None
    assert [p["port"] for p in policy["spec"]["ingress"][1]["ports"]] == [8002, 8003]


def test_the_analysis_job_reads_a_token_from_the_mounted_secret() -> None:
    o = with_auth("cpu-digits", mode="token", secretName="team-tokens")
    req = analysis.AnalysisRequest(
        canary_version="v2", step=0, canary_addresses=("10.0.0.1",), stable_addresses=("10.0.0.2",),
        stable_build_key="bk", model_name="digits", canary_model_name="digits",
        thresholds=analysis.QualityThresholds(0.99, None, None),
    )  # fmt: skip
    job = analysis.render_analysis_job(o, req)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][-2:] == ["--tokens-dir", authproxy.TOKENS_MOUNT]
    assert by_name(pod["volumes"])["inference-tokens"]["secret"] == {"secretName": "team-tokens"}
    off = analysis.render_analysis_job(example_owner("cpu-digits"), req)
    assert "--tokens-dir" not in off["spec"]["template"]["spec"]["containers"][0]["command"]


def test_secret_token_round_trip() -> None:
    o = with_auth("cpu-digits", mode="token")
    live = authproxy.render_secret(o, "t0k")
    assert authproxy.token_of(live) == "t0k" and authproxy.token_of(None) is None
    assert authproxy.token_of({"data": {"token": "%%%"}}) is None
    assert secret.new_key() != secret.new_key() and len(secret.new_key()) >= 43  # what the operator generates


def _built_and_serving(w: World) -> None:
    w.run()
    w.finish_build()
    w.run()
    w.run()


def test_a_generated_token_is_made_once_and_never_leaks_into_pods_status_or_events() -> None:
    w = World(md_obj(auth={"mode": "token"}))
    plans = [w.run()]
    w.finish_build()
    plans += [w.run(), w.run()]
    held = w.get("Secret", f"{NAME}-inference-tokens")
    assert held is not None and authproxy.token_of(held) == TOKEN
    dep = w.get("Deployment", NAME)
    assert dep is not None and "auth-proxy" in json.dumps(dep)
    assert w.md["status"]["auth"] == {"mode": "token", "secretName": f"{NAME}-inference-tokens"}
    for p in plans:
        shown = [c.desired for c in p.children if c.desired["kind"] != "Secret"]
        assert TOKEN not in json.dumps(shown) + json.dumps([e.__dict__ for e in p.events])
    assert TOKEN not in json.dumps(w.md["status"])
    w.objects[("Secret", f"{NAME}-inference-tokens")]["data"]["token"] = "b3RoZXI="  # "other"
    [kept] = [
        c.desired for c in w.decide().children if c.desired["metadata"]["name"] == held["metadata"]["name"]
    ]
    assert authproxy.token_of(kept) == "other", "the live token is read back, never replaced"


def test_turning_auth_off_keeps_the_generated_secret_and_says_so_loudly() -> None:
    w = World(md_obj(auth={"mode": "token"}))
    _built_and_serving(w)
    w.md["spec"]["auth"] = {"mode": "none"}
    p = w.run()
    assert not p.absent, "Secrets are never deleted (RBAC): garbage collection follows the owner"
    assert "auth-proxy" not in json.dumps(w.get("Deployment", NAME))
    assert w.md["status"]["auth"]["mode"] == "none"
    assert "NOT authenticated" in w.md["status"]["auth"]["message"]
    assert [e.reason for e in p.events if e.type == "Warning"] == ["AuthDisabled"]
    assert not [e for e in w.run().events if e.reason == "AuthDisabled"], "said once, on the change"


def test_a_named_secret_is_not_generated() -> None:
    w = World(md_obj(auth={"mode": "token", "secretName": "team-tokens"}))
    _built_and_serving(w)
    assert w.get("Secret", f"{NAME}-inference-tokens") is None
    assert w.md["status"]["auth"] == {"mode": "token", "secretName": "team-tokens"}


def test_an_unset_auth_takes_the_operator_s_default() -> None:
    w = World(md_obj())
    w.default_auth = "token"
    _built_and_serving(w)
    assert w.md["status"]["auth"]["mode"] == "token"
    assert w.get("Secret", f"{NAME}-inference-tokens") is not None
    build_jobs = [k for k in w.objects if k[0] == "Job"]
    w.default_auth = "none"
    w.run()
    assert w.md["status"]["auth"]["mode"] == "none"
    assert [k for k in w.objects if k[0] == "Job"] == build_jobs, "auth never rebuilds"


def test_a_taken_token_secret_name_holds_back_the_deployment() -> None:
    w = World(md_obj(auth={"mode": "token"}))
    w.objects[("Secret", f"{NAME}-inference-tokens")] = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": f"{NAME}-inference-tokens", "namespace": "ns", "uid": "theirs"},
        "data": {"token": "dGhlaXJz"},
    }  # fmt: skip
    w.run()
    w.finish_build()
    p = w.run()
    assert not [c for c in p.children if c.desired["kind"] == "Deployment"]
    degraded = next(c for c in w.md["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "OwnershipConflict" and "inference-token Secret" in degraded["message"]


@pytest.mark.parametrize(
    ("auth", "default", "reads"),
    [
        (None, "none", False),
        (None, "token", True),
        ({"mode": "token"}, "none", True),
        ({}, "none", True),  # mode defaults to token
        ({"mode": "token", "secretName": "team"}, "token", False),
        ({"mode": "none"}, "token", False),
    ],
)  # fmt: skip
def test_the_generated_secret_is_read_only_when_the_spec_generates_one(
    auth: dict[str, Any] | None, default: types.AuthMode, reads: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "DEFAULT_AUTH_MODE", [default])
    md = md_obj() if auth is None else md_obj(auth=auth)
    assert snapshot._generates(md) is reads
