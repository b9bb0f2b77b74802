"""The chart rendered offline with `helm template` / `helm lint`: no cluster needed, but helm (make tools)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conch import kube, metrics
from conch.api import types

from .helmrun import CHART, ROOT, helm, objects, one, template

# No skip when helm is missing: `make test-unit` must not pass by rendering nothing (helm() says what to run).
pytestmark = pytest.mark.unit

CRD_NAME = "modeldeployments.serving.conch.dev.yaml"
MONITORING = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
              "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")  # fmt: skip


def test_crd_copy_matches_generated() -> None:
    """charts/conch/files/crds must be a byte-for-byte copy of the generated crds/."""
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    copied = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copied == generated
    for name in generated:
        want = (ROOT / "crds" / name).read_text()
        have = (CHART / "files" / "crds" / name).read_text()
        assert have == want, f"stale chart CRD: cp crds/{name} charts/conch/files/crds/"


def test_lint_strict() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "crds.install=false", "--set", "watchNamespaces={a,b}")


def test_crd_renders_with_keep_annotation_and_generated_spec() -> None:
    crd = one(objects(template()), "CustomResourceDefinition")
    generated = yaml.safe_load((ROOT / "crds" / CRD_NAME).read_text())
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"] == generated["spec"]


def test_crds_install_false_renders_no_crd() -> None:
    docs = objects(template("--set", "crds.install=false"))
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]


def test_deployment_defaults_watch_all_namespaces_and_are_restricted() -> None:
    docs = objects(template())
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--all-namespaces" in container["args"]
    assert "--metrics-port=8080" in container["args"]
    assert "--metrics-address=0.0.0.0" in container["args"]  # in a pod; local runs default to loopback
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_watch_namespaces_become_namespace_flags() -> None:
    pod = one(objects(template("--set", "watchNamespaces={team-a,team-b}")), "Deployment")["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]


def test_schema_rejects_bad_values() -> None:
    for bad in ("replicaCount=11", "metrics.port=0", "image.pullPolicy=Sometimes", "nosuchkey=1"):
        proc = helm("template", "x", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr, proc.stderr


def test_rbac_covers_every_resource_the_operator_talks_to() -> None:
    rules = one(objects(template()), "ClusterRole")["rules"]
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    for api_version, _kind in kube.PLURALS:
        group = api_version.rpartition("/")[0]
        assert (group, kube.PLURALS[(api_version, _kind)]) in granted, (api_version, _kind)
    assert ("serving.conch.dev", "modeldeployments/status") in granted
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)
    secret_verbs = {v for rule in rules if "secrets" in rule["resources"] for v in rule["verbs"]}
    assert secret_verbs == {"get", "create", "patch"}  # never list/watch/delete: one Secret per MD


def test_monitoring_objects_are_gated_on_the_api_being_served() -> None:
    without = objects(template("--set", "metrics.serviceMonitor.enabled=true"))
    assert not [d for d in without if d["kind"] in ("PrometheusRule", "ServiceMonitor")]
    with_api = objects(template("--set", "metrics.serviceMonitor.enabled=true", *MONITORING))
    monitor = one(with_api, "ServiceMonitor")
    service = one(with_api, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    disabled = objects(template("--set", "prometheusRule.enabled=false", *MONITORING))
    assert not [d for d in disabled if d["kind"] == "PrometheusRule"]


def _metric_families() -> set[str]:
    names: set[str] = set()
    for collector in (metrics.RECONCILES, metrics.RECONCILE_ERRORS, metrics.BUILDS, metrics.ROLLOUTS,
                      metrics.ROLLBACKS, metrics.SPEC_TO_SERVING, metrics.RECONCILE_SECONDS):  # fmt: skip
        for family in collector.describe():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names | _llm_metric_families()


def _llm_metric_families() -> set[str]:
    """The series a generative model's Triton exports (llmmetrics.py runs only inside Triton's python
    stub, so its family declarations are read from its source)."""
    source = (ROOT / "model_repo_builder/triton/python_backend/llmmetrics.py").read_text()
    names: set[str] = set()
    for name, kind in re.findall(r'_family\(\s*"([a-z0-9_]+)",\s*"[^"]*",\s*(\w+)\)', source):
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names.update(f"conch_llm_{name}{suffix}" for suffix in suffixes)
    return names


def test_alerts_use_metrics_the_operator_exports() -> None:
    rule = one(objects(template(*MONITORING)), "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"ConchBuildFailed", "ConchRolloutFailed", "ConchRollbackHappened"} <= alerts.keys()
    assert {"ConchLlmTimeToFirstTokenHigh", "ConchLlmQueueFull", "ConchLlmErrorRatio"} <= alerts.keys()
    exported = _metric_families()
    assert len(_llm_metric_families()) == 4 * 3 + 8  # four histograms, eight counters and gauges
    for alert in alerts.values():
        for name in re.findall(r"\bconch_[a-z_]+", alert["expr"]):
            assert name in exported, f"{alert['alert']} uses {name}, which nothing of Conch exports"
        assert "{{ $value" not in alert["expr"]
    assert "{{ $value | humanize }}" in alerts["ConchBuildFailed"]["annotations"]["description"]


def test_dashboard_is_valid_json_with_the_expected_panels() -> None:
    config_map = one(objects(template()), "ConfigMap")
    dashboard = json.loads(config_map["data"]["conch.json"])
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in ("conch_builds_total", "conch_rollouts_total", "conch_rollbacks_total",
                   "conch_spec_to_serving_seconds_bucket", "nv_inference_request_success",
                   "nv_inference_queue_duration_us", "conch_llm_time_to_first_token_seconds_bucket",
                   "conch_llm_inter_token_latency_seconds_bucket", "conch_llm_waiting_sequences",
                   "conch_llm_kv_cache_tokens", "conch_llm_rejected_requests_total"):  # fmt: skip
        assert needed in exprs, needed
    exported = _metric_families()
    for name in re.findall(r"\bconch_[a-z_]+", exprs):
        assert name in exported, name


def test_the_adapter_rules_serve_the_metric_names_the_api_defaults_to() -> None:
    """spec.autoscaling's custom metrics (queueTime, waitingSequences, kvCache) by their default names."""
    rendered = objects(template("--set", "prometheusAdapter.rules.enabled=true"))
    (config_map,) = [o for o in rendered if o["kind"] == "ConfigMap" and "config.yaml" in o["data"]]
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = {rule["name"]["as"] for rule in rules}
    defaults = {
        types.QueueTimeTarget.model_fields["metric_name"].default,
        types.WaitingSequencesTarget.model_fields["metric_name"].default,
        types.KvCacheTarget.model_fields["metric_name"].default,
    }
    assert served == defaults
    assert all("<<.LabelMatchers>>" in rule["metricsQuery"] for rule in rules)
