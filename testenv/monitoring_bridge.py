"""The config bridge between the Prometheus Operator and a Prometheus process outside the cluster.

The operator turns a `Prometheus` object, the ServiceMonitors and the PrometheusRules it selects into
a gzipped config Secret (`prometheus-<name>`, key prometheus.yaml.gz) and rule ConfigMaps
(`prometheus-<name>-rulefiles-<n>`) that its StatefulSet's pod would mount. No such pod runs here
(testenv/monitoring.sh keeps the StatefulSet at 0 replicas): this loop plays the config-reloader's part for
a prometheus process on the host. It adapts only what a process outside the cluster needs:

- every kubernetes_sd_configs entry gets `kubeconfig_file` (in a pod it would use the in-cluster
  ServiceAccount), so service discovery reads EndpointSlices and pods through the cluster's apiserver;
- rule_files under /etc/prometheus/rules/ point at the local copies of the rule ConfigMaps;
- `$(POD_NAME)` (external labels) and `$(SHARD)` (the sharding relabel) are expanded as the
  config-reloader would (one shard, shard 0).

Each change is written atomically and prometheus is told to reload (POST /-/reload). It polls once a
second: the objects are small and a watch per kind would buy little for a test fixture.

It also stands in for the EndpointSlice controller where this cluster's pods defeat it: pod IPs are
loopback addresses here (kwok, the node agent), which the apiserver refuses in IPv4 EndpointSlices, so
a Service's slices stay empty and a ServiceMonitor would find nothing. For every Service with a
selector, the Running pods it selects whose IP is in 127.0.0.0/8 are written to an FQDN EndpointSlice
(the literal IP passes its validation) with the pod as targetRef, as the controller would have done.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import ipaddress
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config

log = logging.getLogger("bridge")
POD_RULES = "/etc/prometheus/rules/"


def adapt(cfg: dict[str, Any], kubeconfig: str, rules_dir: Path, pod_name: str) -> dict[str, Any]:
    """The operator's config, made runnable by a prometheus on the host (pure)."""
    for job in cfg.get("scrape_configs") or []:
        for sd in job.get("kubernetes_sd_configs") or []:
            sd["kubeconfig_file"] = kubeconfig
            sd.pop("api_server", None)
    cfg["rule_files"] = [
        str(rules_dir / f[len(POD_RULES) :]) if f.startswith(POD_RULES) else f
        for f in cfg.get("rule_files") or []
    ]
    expanded: dict[str, Any] = expand(cfg, {"$(POD_NAME)": pod_name, "$(SHARD)": "0"})
    return expanded


def expand(node: Any, env: dict[str, str]) -> Any:
    """The config-reloader's $(VAR) expansion (external labels, the sharding relabel's regex)."""
    if isinstance(node, dict):
        return {k: expand(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v, env) for v in node]
    if isinstance(node, str):
        for var, value in env.items():
            node = node.replace(var, value)
    return node


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def sync_rules(core: client.CoreV1Api, namespace: str, name: str, rules_dir: Path) -> bool:
    """Copy each rule ConfigMap to rules_dir/<configmap>/<key>; drop what is gone."""
    changed = False
    wanted: set[Path] = set()
    for cm in core.list_namespaced_config_map(namespace, label_selector=f"prometheus-name={name}").items:
        folder = rules_dir / str(cm.metadata.name if cm.metadata else "")
        folder.mkdir(parents=True, exist_ok=True)
        for key, text in (cm.data or {}).items():
            wanted.add(folder / key)
            changed |= write_if_changed(folder / key, text)
    for old in rules_dir.glob("*/*"):
        if old not in wanted:
            old.unlink()
            changed = True
    return changed


def sync_config(core: client.CoreV1Api, args: argparse.Namespace, rules_dir: Path) -> bool:
    secret = core.read_namespaced_secret(f"prometheus-{args.name}", args.namespace)

    raw = gzip.decompress(base64.b64decode((secret.data or {})["prometheus.yaml.gz"]))
    cfg = adapt(yaml.safe_load(raw) or {}, args.kubeconfig, rules_dir, f"prometheus-{args.name}-0")
    leftovers = [line for line in yaml.safe_dump(cfg).splitlines() if "/etc/prometheus/" in line]
    if leftovers:
        log.warning(
            "paths only a pod has (secrets/certs of a ServiceMonitor are not supported): %s", leftovers
        )
    return write_if_changed(Path(args.out) / "prometheus.yml", yaml.safe_dump(cfg, sort_keys=False))


MIRROR = "loopback-mirror.monitoring.conch.dev"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container_port(pod: dict[str, Any], target: int | str) -> int | None:
    """A Service port's targetPort resolved against the pod (a name must match a container port)."""
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def mirror_slice(service: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The FQDN EndpointSlice for a Service's loopback pods, or None when it selects none (pure)."""
    meta, spec = service["metadata"], service["spec"]
    selector = spec.get("selector") or {}
    chosen = [
        p for p in pods
        if selector.items() <= (p["metadata"].get("labels") or {}).items()
        and p.get("status", {}).get("phase") == "Running"
        and p.get("status", {}).get("podIP")
        and ipaddress.ip_address(p["status"]["podIP"]) in LOOPBACK
        and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    if not selector or not chosen:
        return None
    ports = []
    for sp in spec.get("ports") or []:
        numbers = {container_port(p, sp.get("targetPort", sp["port"])) for p in chosen}
        if len(numbers) == 1 and None not in numbers:  # (pods that disagree on a named port: left out)
            ports.append(
                {"name": sp.get("name", ""), "port": numbers.pop(), "protocol": sp.get("protocol", "TCP")}
            )
    endpoints = [
        {"addresses": [p["status"]["podIP"]], "conditions": {"ready": pod_ready(p)},
         "nodeName": p["spec"].get("nodeName"),
         "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": meta["namespace"],
                       "uid": p["metadata"]["uid"]}}
        for p in sorted(chosen, key=lambda p: str(p["metadata"]["name"]))
    ]  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{meta['name']}-loopback", "namespace": meta["namespace"],
                     "labels": {"kubernetes.io/service-name": meta["name"],
                                "endpointslice.kubernetes.io/managed-by": MIRROR}},
        "addressType": "FQDN", "endpoints": endpoints, "ports": ports,
    }  # fmt: skip


def plain(api: client.ApiClient, obj: object) -> Any:
    """An API object as the JSON the apiserver sent (camelCase keys)."""
    return api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def sync_mirrors(api: client.ApiClient, last: dict[str, str]) -> None:
    """Create, replace or delete the mirrored slices; `last` remembers what was written (key -> JSON)."""
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    services = plain(api, core.list_service_for_all_namespaces())["items"]
    wanted: dict[str, dict[str, Any]] = {}
    for svc in services:
        ns, selector = svc["metadata"]["namespace"], svc["spec"].get("selector")
        if not selector:
            continue
        # the apiserver filters: a namespace of 3000 unrelated pods costs nothing here
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = core.list_namespaced_pod(ns, label_selector=labels, field_selector="status.phase=Running")
        body = mirror_slice(svc, plain(api, pods)["items"])
        if body is not None:
            wanted[f"{ns}/{body['metadata']['name']}"] = body
    existing = discovery.list_endpoint_slice_for_all_namespaces(
        label_selector=f"endpointslice.kubernetes.io/managed-by={MIRROR}"
    ).items
    have = {f"{s.metadata.namespace}/{s.metadata.name}" for s in existing if s.metadata}
    for key in have - wanted.keys():
        ns, name = key.split("/", 1)
        with contextlib.suppress(client.ApiException):  # already gone with its namespace
            discovery.delete_namespaced_endpoint_slice(name, ns)
        last.pop(key, None)
    for key, body in wanted.items():
        text = json.dumps(body, sort_keys=True)
        if key in have and last.get(key) == text:
            continue
        ns, name = key.split("/", 1)
        try:
            if key in have:
                discovery.replace_namespaced_endpoint_slice(name, ns, cast(Any, body))
            else:
                discovery.create_namespaced_endpoint_slice(ns, cast(Any, body))
        except client.ApiException as exc:  # e.g. the namespace is being deleted: the next pass decides
            log.info("mirror %s: %s %s", key, exc.status, exc.reason)
            continue
        last[key] = text


def reload(url: str) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).read()
        log.info("prometheus reloaded")
    except OSError as exc:  # not started yet, or stopped on purpose: it reads the file when it starts
        log.info("reload skipped (%s)", exc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", required=True, help="the Prometheus object's name")
    p.add_argument("--out", required=True, help="folder for prometheus.yml and rules/")
    p.add_argument("--reload-url", required=True)
    p.add_argument("--every", type=float, default=1.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(args.kubeconfig)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    rules_dir = Path(args.out) / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    digest = ""
    mirrored: dict[str, str] = {}
    while True:
        try:
            sync_mirrors(api, mirrored)
            changed = sync_rules(core, args.namespace, args.name, rules_dir)
            changed |= sync_config(core, args, rules_dir)
            if changed:
                now = hashlib.sha256((Path(args.out) / "prometheus.yml").read_bytes()).hexdigest()[:12]
                log.info("configuration changed (%s -> %s)", digest or "none", now)
                digest = now
                reload(args.reload_url)
        except client.ApiException as exc:
            log.warning("reading the operator's objects failed: %s %s", exc.status, exc.reason)
        time.sleep(args.every)


if __name__ == "__main__":
    main()
