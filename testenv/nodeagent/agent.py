"""The agent: the API calls a kubelet makes, the node heartbeat, and the watch on the node's pods."""

from __future__ import annotations

import base64
import datetime
import logging
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from testenv.nodeagent import node, pod, runtime

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
# The apiserver going away for a moment (a test that restarts it): connection refused or cut mid-watch.
# A kubelet rides that out; so does the agent: the watch lists again, a pod's status is sent next tick.
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
log = logging.getLogger("nodeagent")


class Api:
    """The kubelet's side of the API for this agent (also pod.PodApi)."""

    def __init__(self, kubeconfig: str | None, node_name: str) -> None:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.client = client.ApiClient()
        self.core = client.CoreV1Api(self.client)
        self.coordination = client.CoordinationV1Api(self.client)
        self.node_name = node_name

    def patch_pod_status(self, p: Obj, body: Obj) -> bool:
        """Send a pod's status; False when the apiserver could not be reached or answered 5xx (the
        worker sends it again on its next tick)."""
        meta = p["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": body}, _content_type=MERGE
            )
        except UNREACHABLE as exc:
            log.warning("status of %s not sent: %s", meta["name"], exc)
            return False
        except ApiException as exc:
            if exc.status is not None and exc.status >= 500:
                log.warning("status of %s not sent: %s", meta["name"], exc.reason)
                return False
            if exc.status != 404:
                raise
        return True

    def delete_pod(self, p: Obj) -> None:
        meta = p["metadata"]
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
        )
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def event(self, p: Obj, reason: str, message: str, warning: bool = False) -> None:
        meta = p["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        body: Any = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "source": {"component": "conch-node-agent", "host": self.node_name},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }  # fmt: skip
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:
            log.warning("event %s on %s not recorded: %s", reason, meta["name"], exc.reason)
        except UNREACHABLE as exc:
            log.warning("event %s on %s not recorded: %s", reason, meta["name"], exc)

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret (a secretKeyRef env var), or None when the Secret or key is missing."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value = (secret.data or {}).get(key)
        return None if value is None else base64.b64decode(value).decode()

    def volume_path(self, p: Obj, volume: Obj, scratch: Path) -> Path:
        """The local directory behind a pod volume (a PVC resolves to its PV's hostPath/local path)."""
        if "emptyDir" in volume:
            scratch.mkdir(parents=True, exist_ok=True)
            return scratch
        if "hostPath" in volume:
            return self.ensure_dir(Path(volume["hostPath"]["path"]))
        if "persistentVolumeClaim" in volume:
            return self.claim_path(p, volume)
        if "secret" in volume:
            return self.secret_files(p, volume["secret"]["secretName"], scratch)
        if "configMap" in volume:
            cm = self.core.read_namespaced_config_map(volume["configMap"]["name"], p["metadata"]["namespace"])
            scratch.mkdir(parents=True, exist_ok=True)
            for key, value in (cm.data or {}).items():
                (scratch / key).write_text(value)
            return scratch
        kinds = sorted(set(volume) - {"name"})
        raise runtime.UnsupportedPodError(
            f"volume {volume['name']!r}: type {kinds} is not supported by the node agent"
        )

    def secret_files(self, p: Obj, name: str, folder: Path) -> Path:
        """A Secret volume: one file per key, kept equal to the Secret (PodWorker calls this again every
        few seconds, as a kubelet re-syncs Secret volumes, so a rotated Secret reaches running pods).
        Each file is replaced by a rename, so a reader never sees half a value."""
        try:
            secret = self.core.read_namespaced_secret(name, p["metadata"]["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                raise runtime.UnsupportedPodError(f"secret volume: Secret {name!r} not found") from exc
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in data.items():
            path = folder / key
            if not path.exists() or path.read_bytes() != value:
                staged = folder / f".{key}.staged"
                staged.write_bytes(value)
                staged.chmod(0o644)
                staged.replace(path)
        for old in folder.iterdir():
            if not old.name.startswith(".") and old.name not in data:
                old.unlink()
        return folder

    def claim_path(self, p: Obj, volume: Obj) -> Path:
        """A PVC's bound PV as a local directory (hostPath or local PVs: the only kinds a laptop has)."""
        claim = volume["persistentVolumeClaim"]["claimName"]
        pvc = self.as_dict(
            self.core.read_namespaced_persistent_volume_claim(claim, p["metadata"]["namespace"])
        )
        bound = pvc["spec"].get("volumeName")
        if not bound:
            raise runtime.UnsupportedPodError(f"volume {volume['name']!r}: claim {claim!r} is not bound")
        pv = self.as_dict(self.core.read_persistent_volume(bound))["spec"]
        source = pv.get("hostPath") or pv.get("local")
        if source is None:
            raise runtime.UnsupportedPodError(
                f"volume {volume['name']!r}: PV {bound} is neither hostPath nor local"
            )
        return self.ensure_dir(Path(source["path"]))

    def as_dict(self, obj: Any) -> Obj:
        """A client model as the API's JSON (camelCase keys)."""
        out: Obj = self.client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return out

    @staticmethod
    def ensure_dir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path


class Agent:
    """Registers the node, keeps it alive, and runs a PodWorker per pod bound to it."""

    def __init__(self, api: Api, tools: runtime.Toolchain, state: Path, pod_cidr: str, *,
                 cpu: str = "8", memory: str = "16Gi", gpus: int = 0) -> None:  # fmt: skip
        self.api, self.tools, self.state = api, tools, state
        self.name = api.node_name
        self.pod_cidr, self.cpu, self.memory, self.gpus = pod_cidr, cpu, memory, gpus
        self.ips = node.IpPool(pod_cidr)
        self.workers: dict[str, pod.PodWorker] = {}
        self.stopping = threading.Event()

    def register(self) -> None:
        """Create or update the Node (server-side apply), then its status and first lease."""
        body = node.render_node(self.name, self.pod_cidr, self.cpu, self.memory, self.gpus)
        self.api.core.patch_node(self.name, body, field_manager="conch-node-agent", force=True,
                                 _content_type="application/apply-patch+yaml")  # fmt: skip
        self.heartbeat(status_too=True)

    def heartbeat(self, status_too: bool = False) -> None:
        lease = node.render_lease(self.name, datetime.datetime.now(datetime.UTC))
        self.api.coordination.patch_namespaced_lease(
            self.name, "kube-node-lease", lease, field_manager="conch-node-agent", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
        if status_too:
            body = node.render_node_status(self.cpu, self.memory, self.gpus)
            self.api.core.patch_node_status(self.name, body, _content_type=MERGE)

    def heartbeats(self) -> None:
        beats = 0
        while not self.stopping.wait(node.HEARTBEAT):
            beats += 1
            try:
                self.heartbeat(status_too=beats % 6 == 0)
            except Exception:
                log.exception("heartbeat failed")

    def run(self) -> None:
        self.register()
        threading.Thread(target=self.heartbeats, name="heartbeat", daemon=True).start()
        enforced = "enforced" if pod.ISOLATE else "NOT enforced (needs root and unshare)"
        log.info("node %s registered (pod CIDR %s, readOnly mounts %s)", self.name, self.pod_cidr, enforced)
        while not self.stopping.is_set():
            try:
                self.watch_pods()
            except ApiException as exc:
                log.warning("pod watch ended (%s); listing again", exc.reason)
                time.sleep(1)
            except UNREACHABLE as exc:
                log.warning("apiserver unreachable (%s); listing again", exc)
                time.sleep(1)

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        listed = self.api.core.list_pod_for_all_namespaces(field_selector=selector)
        seen = set()
        for item in listed.items:
            obj = self.api.as_dict(item)
            seen.add(obj["metadata"]["uid"])
            self.observe("ADDED", obj)
        for uid in set(self.workers) - seen:
            self.workers.pop(uid).vanish()
        version = listed.metadata.resource_version if listed.metadata else None
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.api.core.list_pod_for_all_namespaces, field_selector=selector,
            resource_version=version, timeout_seconds=60,
        )  # fmt: skip
        for event in stream:
            if self.stopping.is_set():
                return
            self.observe(event["type"], self.api.as_dict(event["object"]))

    def observe(self, kind: str, obj: Obj) -> None:
        uid = obj["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                self.workers.pop(uid).vanish()
            return
        if worker is not None:
            worker.update(obj)
            return
        if obj["metadata"].get("deletionTimestamp"):
            self.api.delete_pod(obj)  # being deleted and never started here: nothing to stop
            return
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return  # finished before this agent started: nothing left to run
        worker = pod.PodWorker(self.api, obj, self.tools, self.ips.take(), self.state / "pods")
        self.workers[uid] = worker
        log.info("running pod %s/%s on %s", obj["metadata"]["namespace"], obj["metadata"]["name"], worker.ip)
        worker.start()

    def shutdown(self) -> None:
        """Stop every pod's processes and remove the node (its pods go with it)."""
        self.stopping.set()
        for worker in list(self.workers.values()):
            worker.vanish()
        for worker in list(self.workers.values()):
            worker.join(timeout=40)
        try:
            self.api.core.delete_node(self.name)
            self.api.coordination.delete_namespaced_lease(self.name, "kube-node-lease")
        except ApiException as exc:
            log.warning("node cleanup: %s", exc.reason)
        log.info("node %s removed", self.name)
