"""The optional NetworkPolicy of the Triton pods (spec.serving.networkPolicy): ingress only to the
inference ports (and a generative model's OpenAI port) from the selected callers, to the metrics
port from the selected scrapers, and, when the canary has a quality analysis, to the HTTP port from
the operator's own analysis Job (its pods in this namespace, selected by its labels): without that rule
a policy whose callers are another team's pods blocked the analysis and the canary could never pass."""

from __future__ import annotations

from conch.render import analysis, authproxy, common, deployment, gateway
from conch.render.common import Obj, Owner


def _peer(namespaces: dict[str, str] | None, pods: dict[str, str] | None) -> Obj:
    """A `from` entry: pods (all when unset) in the selected namespaces (this one when unset)."""
    peer: Obj = {"podSelector": {"matchLabels": pods} if pods else {}}
    if namespaces:
        peer["namespaceSelector"] = {"matchLabels": namespaces}
    return peer


def _ports(*numbers: int) -> list[Obj]:
    return [{"protocol": "TCP", "port": n} for n in numbers]


def _analysis_rule(owner: Owner) -> list[Obj]:
    """Ingress from the canary's quality-analysis Job to the HTTP port (none without one)."""
    checks = owner.spec.rollout.canary_analysis()
    if checks is None or checks.quality is None:
        return []
    job_pods = {common.LABEL_MD: owner.name, common.LABEL_COMPONENT: analysis.COMPONENT}
    return [{"from": [_peer(None, job_pods)], "ports": _ports(deployment.HTTP_PORT)}]


def render_networkpolicy(owner: Owner) -> Obj | None:
    """The NetworkPolicy, or None when spec.serving.networkPolicy is not enabled."""
    policy = owner.spec.serving.network_policy
    if policy is None or not policy.enabled:
        return None
    callers = _peer(policy.from_namespaces, policy.from_pods)
    scrapers = _peer(policy.metrics_from_namespaces, None) if policy.metrics_from_namespaces else callers
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(owner, owner.name, "triton"),
        "spec": {
            "podSelector": {"matchLabels": common.selector(owner)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [callers],
                    "ports": _ports(
                        deployment.HTTP_PORT,
                        deployment.GRPC_PORT,
                        *(p for _, p in gateway.service_ports(owner)),
                    ),
                },
                {
                    "from": [scrapers],
                    "ports": _ports(deployment.METRICS_PORT, *(p for _, p in authproxy.service_ports(owner))),
                },
                *_analysis_rule(owner),
            ],
        },
    }
