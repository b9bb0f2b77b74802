"""The chart's production settings rendered offline: leader election with several replicas, a
namespaced install (a Role per watched namespace), name overrides, extra args/env, JSON logs and the
readiness probe."""

from __future__ import annotations

from typing import Any

import pytest

from conch import main

from .helmrun import CHART, helm, objects, one, template

pytestmark = pytest.mark.unit


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    got: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return got


def test_one_replica_runs_alone_and_never_two_side_by_side() -> None:
    docs = objects(template())
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container(docs)["args"]
    assert not [d for d in docs if d["kind"] == "Role"]


def test_several_replicas_elect_a_leader_on_a_lease_they_may_renew() -> None:
    docs = objects(template("--set", "replicaCount=2"))
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    args = container(docs)["args"]
    assert "--leader-elect" in args and f"--leader-election-id={dep['metadata']['name']}" in args
    flags = main.parse([a for a in args if a.startswith("--l") or a.startswith("--r")])
    assert (flags.lease_duration, flags.renew_deadline, flags.retry_period) == (15, 10, 2)
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election"))
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    binding = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["subjects"][0]["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]


def test_leader_timing_that_lets_two_leaders_overlap_is_refused_by_the_operator() -> None:
    with pytest.raises(SystemExit, match="renew deadline"):
        main.leader_election(
            main.parse(["--leader-elect", "--lease-duration", "10", "--renew-deadline", "10"])
        )


def test_namespaced_install_grants_namespaced_rules_only_in_the_watched_namespaces() -> None:
    cluster_wide = one(objects(template()), "ClusterRole")["rules"]
    docs = objects(template("--set", "watchNamespaces={team-a,team-b}"))
    roles = {d["metadata"]["namespace"]: d["rules"] for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"team-a", "team-b"}
    crd_rule = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                "verbs": ["get", "list", "watch"]}  # fmt: skip
    assert one(docs, "ClusterRole")["rules"] == [crd_rule]  # no namespaces, no children, cluster-wide
    namespaced = [r for r in cluster_wide if r != crd_rule and r["resources"] != ["namespaces"]]
    assert roles["team-a"] == roles["team-b"] == namespaced
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"}
    assert bindings == {"team-a", "team-b"}


def test_name_overrides_extra_args_env_json_logs_and_readiness() -> None:
    docs = objects(
        template(
            "--set", "fullnameOverride=serving-ctl", "--set", "logFormat=json",
            "--set", "extraArgs={--verbose}", "--set", "extraEnv[0].name=HTTPS_PROXY",
            "--set", "extraEnv[0].value=http://proxy:3128",
        )
    )  # fmt: skip
    dep = one(docs, "Deployment")
    assert (
        dep["metadata"]["name"] == "serving-ctl"
        and one(docs, "ClusterRole")["metadata"]["name"] == "serving-ctl"
    )
    c = container(docs)
    assert "--log-format=json" in c["args"] and c["args"][-1] == "--verbose"
    assert main.parse([a for a in c["args"] if a.startswith("--log")]).log_format == "json"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    renamed = one(objects(template("--set", "nameOverride=models")), "Deployment")["metadata"]["name"]
    assert renamed.endswith("-models")


@pytest.mark.parametrize(
    "bad",
    [
        "replicaCount=11", "logFormat=xml", "leaderElection.retryPeriodSeconds=0", "workers=0",
        "kubeApi.qps=0", "kubeApi.burst=0", "resyncSeconds=1", "defaultAuthMode=open",
    ],
)  # fmt: skip
def test_schema_rejects_bad_production_values(bad: str) -> None:
    proc = helm("template", "x", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr, (bad, proc.stderr)


def test_throughput_settings_reach_the_operator() -> None:
    args = container(
        objects(template("--set", "workers=8", "--set", "kubeApi.qps=50", "--set", "resyncSeconds=300"))
    )["args"]
    parsed = main.parse([a for a in args if a.startswith(("--workers", "--kube-api", "--resync"))])
    assert (parsed.workers, parsed.kube_api_qps, parsed.kube_api_burst, parsed.resync_seconds) == (
        8,
        50,
        200,
        300,
    )


def test_inference_needs_tokens_by_default_and_may_be_opened() -> None:
    parse = lambda args: main.parse([a for a in args if a.startswith("--default-auth")])  # noqa: E731
    assert parse(container(objects(template()))["args"]).default_auth_mode == "token"
    opened = container(objects(template("--set", "defaultAuthMode=none")))["args"]
    assert parse(opened).default_auth_mode == "none"


def test_store_gc_grace_and_opt_out_reach_the_operator() -> None:
    assert "--store-gc-grace=86400" in container(objects(template()))["args"]
    args = container(objects(template("--set", "storeGC.enabled=false")))["args"]
    assert "--no-store-gc" in args and main.parse(["--no-store-gc"]).no_store_gc


def test_prometheus_url_becomes_the_operators_default_for_canary_analyses() -> None:
    assert "CONCH_PROMETHEUS_URL" not in str(container(objects(template()))["env"])
    env = container(objects(template("--set", "prometheusUrl=http://prometheus-operated.monitoring:9090")))[
        "env"
    ]
    assert {"name": "CONCH_PROMETHEUS_URL", "value": "http://prometheus-operated.monitoring:9090"} in env
    assert (
        helm("template", "x", str(CHART), "--set", "prometheusUrl=prometheus:9090", check=False).returncode
        != 0
    )
