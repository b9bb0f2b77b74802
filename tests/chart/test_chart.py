"""The chart against the real apiserver: install/uninstall, server-side validation, and what the
operator's ServiceAccount may (and may not) do once the chart's RBAC is in place.

CRDs are cluster-scoped and the operator suites install the same CRD with `kubectl apply
--server-side`, so releases here run with crds.install=false (the CRD template is still validated
by a server-side dry run). Each test uses its own release name, so its ClusterRole/Binding names are
unique, and uninstalls it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Cluster

from .helmrun import CHART, ROOT, helm, objects, template

pytestmark = pytest.mark.cluster

MONITORING_SM = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")

# (verb, resource, subresource) the operator needs in every namespace it watches.
NEEDED_NAMESPACED = [
    *[(v, "modeldeployments.serving.conch.dev", "") for v in ("get", "list", "watch")],
    ("patch", "modeldeployments.serving.conch.dev", "status"),
    ("update", "modeldeployments.serving.conch.dev", "finalizers"),
    *[(v, "jobs.batch", "") for v in ("get", "list", "watch", "create", "patch", "delete")],
    *[(v, "pods", "") for v in ("get", "list", "watch")],
    *[(v, "deployments.apps", "") for v in ("get", "list", "watch", "create", "patch")],
    *[(v, "services", "") for v in ("get", "list", "watch", "create", "patch")],
    *[
        (v, r, "")
        for r in ("horizontalpodautoscalers.autoscaling", "poddisruptionbudgets.policy")
        for v in ("get", "list", "watch", "create", "patch", "delete")
    ],
    *[(v, "servicemonitors.monitoring.coreos.com", "") for v in ("get", "create", "patch", "delete")],
    *[(v, "networkpolicies.networking.k8s.io", "") for v in ("get", "create", "patch", "delete")],
    ("create", "events", ""),
    *[(v, "secrets", "") for v in ("get", "create", "patch")],  # Triton's admin-key Secret
]
# Cluster-scoped reads kopf makes (CRD and namespace observation).
NEEDED_CLUSTER = [
    *[(v, "customresourcedefinitions.apiextensions.k8s.io", "") for v in ("get", "list", "watch")],
    *[(v, "namespaces", "") for v in ("list", "watch")],
]
FORBIDDEN_NAMESPACED = [
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("update", "secrets", ""),
    ("delete", "secrets", ""),
    ("get", "configmaps", ""),
    ("create", "pods", ""),
    ("delete", "pods", ""),
    ("create", "pods", "exec"),
    ("create", "pods", "portforward"),
    ("get", "pods", "log"),
    ("create", "serviceaccounts", "token"),
    ("create", "serviceaccounts", ""),
    ("delete", "deployments.apps", ""),
    ("update", "deployments.apps", ""),
    ("delete", "services", ""),
    ("create", "modeldeployments.serving.conch.dev", ""),
    ("update", "modeldeployments.serving.conch.dev", ""),
    ("patch", "modeldeployments.serving.conch.dev", ""),
    ("delete", "modeldeployments.serving.conch.dev", ""),
    ("delete", "events", ""),
    ("patch", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("create", "prometheusrules.monitoring.coreos.com", ""),
]
FORBIDDEN_CLUSTER = [
    ("delete", "namespaces", ""),
    ("create", "namespaces", ""),
    ("get", "namespaces", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("list", "nodes", ""),
    ("patch", "nodes", ""),
    ("impersonate", "users", ""),
    ("impersonate", "serviceaccounts", ""),
    ("create", "certificatesigningrequests.certificates.k8s.io", ""),
    ("list", "secrets", ""),
]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    """A release of the chart (crds.install=false, one ServiceMonitor) in the test's namespace."""
    name = f"conch-t{secrets.token_hex(3)}"  # contains the chart name: fullname == release name
    helm(
        "install", name, str(CHART), "--namespace", namespace,
        "--set", "crds.install=false",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "image.tag=test",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    try:
        yield Release(name, namespace, name)
    finally:
        helm(
            "uninstall", name, "--namespace", namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False
        )


def test_install_creates_the_operator_and_uninstall_removes_it(cluster: Cluster, release: Release) -> None:
    status = helm(
        "status", release.name, "-n", release.namespace, "-o", "json", kubeconfig=cluster.kubeconfig
    )
    assert '"status":"deployed"' in status.stdout.replace(" ", "")
    ns = ("-n", release.namespace)
    for kind in ("deployment", "serviceaccount", "service", "configmap", "servicemonitor"):
        cluster.kubectl(*ns, "get", kind, "-l", f"app.kubernetes.io/instance={release.name}", "-o", "name")
    got = cluster.kubectl(*ns, "get", "deployment", release.fullname, "-o", "jsonpath={.spec.template.spec}")
    assert '"--all-namespaces"' in got.stdout and '"readOnlyRootFilesystem":true' in got.stdout
    cluster.kubectl("get", "clusterrole", release.fullname)
    cluster.kubectl("get", "clusterrolebinding", release.fullname)
    # The PrometheusRule is rendered exactly when the cluster serves its API (the monitoring tests of
    # the same session install the Prometheus Operator's CRDs, and a reused cluster keeps them).
    served = (
        cluster.kubectl("get", "crd", "prometheusrules.monitoring.coreos.com", check=False).returncode == 0
    )
    manifest = helm("get", "manifest", release.name, *ns, kubeconfig=cluster.kubeconfig).stdout
    kinds = {d["kind"] for d in objects(manifest)}
    assert ("PrometheusRule" in kinds) == served and "CustomResourceDefinition" not in kinds
    assert "ServiceMonitor" in kinds

    helm("uninstall", release.name, *ns, "--wait", kubeconfig=cluster.kubeconfig)
    gone = cluster.kubectl("get", "clusterrole", release.fullname, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    gone = cluster.kubectl(*ns, "get", "deployment", release.fullname, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("--set", "watchNamespaces={@ns}", "--set", "verbose=true"),  # Roles land in watched namespaces
        (
            "--set",
            "serviceAccount.name=custom",
            "--set",
            "grafanaDashboard.enabled=false",
            "--set",
            "replicaCount=0",
        ),
    ],
    ids=["defaults", "namespaced", "custom-sa"],
)
def test_rendered_objects_pass_server_side_validation(
    cluster: Cluster, namespace: str, values: tuple[str, ...]
) -> None:
    """Every rendered object, the CRD included, is accepted by the apiserver (dry run: nothing is stored)."""
    values = tuple(v.replace("@ns", namespace) for v in values)
    rendered = template(
        "--set", "metrics.serviceMonitor.enabled=true", *MONITORING_SM, *values,
        namespace=namespace, release=f"dry-{secrets.token_hex(3)}",
    )  # fmt: skip
    kinds = [d["kind"] for d in objects(rendered)]
    assert "CustomResourceDefinition" in kinds and "ServiceMonitor" in kinds
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts",
        "--field-manager=conch-chart-test", "-f", "-",
        input=rendered,
    )  # fmt: skip
    assert proc.stdout.count("(server dry run)") == len(kinds), proc.stdout


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, sub: str, *, namespace: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", sa]
    if sub:
        args.append(f"--subresource={sub}")
    args += ["-n", namespace] if namespace else []
    proc = cluster.kubectl(*args, check=False)
    assert proc.stdout.strip() in ("yes", "no"), (args, proc.stdout, proc.stderr)
    return proc.stdout.strip() == "yes"


def test_service_account_has_exactly_what_the_operator_needs(cluster: Cluster, release: Release) -> None:
    sa = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    # can-i only resolves modeldeployments once the CRD is served (a fresh cluster has none yet).
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established("modeldeployments.serving.conch.dev")
    missing, excess = [], []
    # Cluster-wide: the operator watches all namespaces, so check its own and another one.
    for ns in (release.namespace, "default"):
        missing += [(ns, *c) for c in NEEDED_NAMESPACED if not _can_i(cluster, sa, *c, namespace=ns)]
        excess += [(ns, *c) for c in FORBIDDEN_NAMESPACED if _can_i(cluster, sa, *c, namespace=ns)]
    missing += [("-", *c) for c in NEEDED_CLUSTER if not _can_i(cluster, sa, *c, namespace=None)]
    excess += [("-", *c) for c in FORBIDDEN_CLUSTER if _can_i(cluster, sa, *c, namespace=None)]
    assert not missing, f"the operator's ServiceAccount lacks: {missing}"
    assert not excess, f"the operator's ServiceAccount must not have: {excess}"


def test_without_rbac_the_service_account_can_do_nothing(cluster: Cluster, namespace: str) -> None:
    """rbac.create=false leaves permissions to the cluster admin: the control that the checks above bite."""
    name = f"conch-n{secrets.token_hex(3)}"
    helm(
        "install", name, str(CHART), "-n", namespace,
        "--set", "crds.install=false", "--set", "rbac.create=false", "--set", "replicaCount=0",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    try:
        sa = f"system:serviceaccount:{namespace}:{name}"
        assert not _can_i(cluster, sa, "list", "modeldeployments.serving.conch.dev", "", namespace=namespace)
        assert not _can_i(cluster, sa, "patch", "deployments.apps", "", namespace=namespace)
        assert cluster.kubectl("get", "clusterrole", name, check=False).returncode != 0
    finally:
        helm("uninstall", name, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False)
