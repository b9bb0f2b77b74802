"""Table tests of `decide`: snapshots built as dicts, no cluster, no clock.

A tiny fake (`World`) stands in for the apiserver and its controllers: `act` stores what a Plan
applies (with the hash annotation apply.apply would write) and removes what it deletes, `settle`
plays the Deployment controller and the kubelet (every Deployment's pods exist, are ready and rolled
out) unless a test says otherwise. Each pass is decide(snapshot) -> Plan; the assertions are on the
Plan: the children it would write, the status, the Events, the metrics, the requeue.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from conch import apply, canary, decide, kube, plan, snapshot
from conch.api import keys, types
from conch.render import common, deployment

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
NS, NAME, UID = "ns", "md", "uid-1"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
RESYNC = 600.0


def md_obj(version: str = "v1", **spec: Any) -> Obj:
    body = {
        "version": version,
        "model": {"name": "digits", "source": {"path": "m.pt2"}},
        "storage": {"claimName": "store"},
        **spec,
    }
    return {
        "apiVersion": "serving.conch.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "1"},
        "spec": body,
    }  # fmt: skip


def summary(build_key: str, ok: bool = True) -> str:
    error = None if ok else {"kind": "gate-failed", "message": "cosine 0.9 < 0.99"}
    return json.dumps({"ok": ok, "buildKey": build_key if ok else "", "modelName": "digits", "error": error})


def builder_pod(job_name: str, state: Obj) -> Obj:
    """A pod of the build Job `job_name` whose container is in `state` (waiting / terminated)."""
    labels = {common.LABEL_MD: NAME, snapshot.JOB_NAME_LABEL: job_name}
    statuses = [{"name": "builder", "state": state}]
    return {
        "metadata": {"name": f"{job_name}-x", "labels": labels},
        "status": {"containerStatuses": statuses},
    }


class World:
    """The apiserver and the controllers, as far as a pass can see."""

    def __init__(self, md: Obj) -> None:
        self.md = md
        self.objects: dict[tuple[str, str], Obj] = {}  # (kind, name) -> live object
        self.pods: list[Obj] = []
        self.now = T0
        self.served = False
        self.measured: canary.Measurement | None = None
        self.settling = True  # Deployments roll out at once
        self.default_auth: types.AuthMode = "none"  # the operator's --default-auth-mode

    def get(self, kind: str, name: str) -> Obj | None:
        return self.objects.get((kind, name))

    def snap(self) -> snapshot.Snapshot:
        jobs = [o for (k, _), o in self.objects.items() if k == "Job"]
        return snapshot.Snapshot(
            md=copy.deepcopy(self.md), now=self.now, jobs=jobs, pods=list(self.pods),
            stable_deployment=self.get("Deployment", NAME),
            canary_deployment=self.get("Deployment", NAME + deployment.CANARY_SUFFIX),
            service=self.get("Service", NAME), hpa=self.get("HorizontalPodAutoscaler", NAME),
            pdb=self.get("PodDisruptionBudget", NAME), network_policy=self.get("NetworkPolicy", NAME),
            service_monitor=self.get("ServiceMonitor", NAME),
            admin_secret=self.get("Secret", f"{NAME}-triton-admin"),
            token_secret=self.get("Secret", f"{NAME}-inference-tokens"), default_auth=self.default_auth,
            monitors_served=self.served, measured=self.measured,
        )  # fmt: skip

    def decide(self) -> plan.Plan:
        return decide.decide(self.snap(), resync=RESYNC, new_key="admin-key", new_token="fresh-t0ken-9f2a")

    def act(self, p: plan.Plan) -> None:
        self.objects = {k: v for k, v in self.objects.items() if kube.path_of(v) not in p.absent}
        for child in p.children:
            key = (child.desired["kind"], child.desired["metadata"]["name"])
            live = self.objects.get(key)
            if live is not None and apply.up_to_date(child.desired, live):
                continue
            stored = apply.with_hash(copy.deepcopy(child.desired))
            generation = (live or {}).get("metadata", {}).get("generation", 0) + 1
            stored["metadata"]["generation"] = generation
            stored["status"] = (live or {}).get("status", {})
            self.objects[key] = stored
        if p.new_status is not None:
            self.md["status"] = p.new_status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.settling:
            self.settle()

    def settle(self) -> None:
        """Every Deployment fully rolled out: its pods exist and are ready."""
        self.pods = [p for p in self.pods if p["metadata"]["labels"].get(common.LABEL_COMPONENT) != "triton"]
        for (kind, name), dep in self.objects.items():
            if kind != "Deployment":
                continue
            n = dep["spec"].get("replicas", 1)
            dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n,
                             "updatedReplicas": n, "availableReplicas": n, "readyReplicas": n}  # fmt: skip
            labels = dep["spec"]["template"]["metadata"]["labels"]
            self.pods += [pod(f"{name}-{i}", labels, ip=f"10.0.{len(self.pods)}.{i}") for i in range(n)]

    def run(self) -> plan.Plan:
        """One pass: decide, then act on the plan."""
        p = self.decide()
        self.act(p)
        return p

    def finish_build(self, ok: bool = True) -> None:
        """The build Job of the wanted version completes (its pod wrote the summary)."""
        entry = self.entry(self.md["spec"]["version"])
        job = self.objects[("Job", entry["jobName"])]
        job["status"] = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True"}]}
        term = {"exitCode": 0 if ok else 3, "finishedAt": "2026-01-01T00:01:00Z",
                "message": summary(f"bk-{entry['version']}", ok)}  # fmt: skip
        self.pods.append(builder_pod(entry["jobName"], {"terminated": term}))

    def entry(self, version: str) -> Obj:
        return next(h for h in self.md["status"]["history"] if h["version"] == version)

    def edit(self, **spec: Any) -> None:
        self.now += 60
        self.md["spec"].update(spec)
        self.md["metadata"]["generation"] += 1

    def serve(self, version: str = "v1") -> None:
        """Passes until `version` serves (build included)."""
        for _ in range(8):
            p = self.run()
            job = self.objects.get(("Job", self.entry(version)["jobName"]))
            if job is not None and not job.get("status"):
                self.finish_build()
            if self.md["status"].get("currentVersion") == version and not p.writes():
                return
        raise AssertionError(f"{version} never served: {self.md['status']}")


def pod(name: str, labels: dict[str, str], ip: str, ready: bool = True, **container: Any) -> Obj:
    cs = {"name": "triton", "ready": ready, "restartCount": 0, **container}
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": {"name": name, "labels": dict(labels)},
            "status": {"podIP": ip, "conditions": conds, "containerStatuses": [cs]}}  # fmt: skip


def cond(p: plan.Plan, type_: str) -> types.Condition:
    assert p.new_status is not None
    found = p.new_status.condition(type_)
    assert found is not None
    return found


def reasons(p: plan.Plan) -> list[str]:
    return [e.reason for e in p.events]


def metric(p: plan.Plan, name: str, *labels: str) -> float:
    return sum(m.value for m in p.metrics if m.name == name and m.labels == labels)


# ---- build ------------------------------------------------------------------------------------------


def test_first_pass_starts_the_build() -> None:
    w = World(md_obj())
    p = w.run()
    jobs = p.applied("Job")
    spec = types.ModelDeploymentSpec.model_validate(w.md["spec"])
    assert [j["metadata"]["name"] for j in jobs] == [keys.job_name(NAME, keys.spec_key(spec))]
    assert p.applied("Deployment") == [] and p.applied("Secret") == [], "nothing serves before a build"
    assert p.new_status is not None and p.new_status.phase == "Building"
    assert [h.result for h in p.new_status.history] == ["Building"]
    assert "BuildStarted" in reasons(p) and metric(p, "BUILDS", "started") == 1
    assert p.requeue == decide.BUSY_REQUEUE


def test_a_running_build_changes_nothing_and_says_why_it_waits() -> None:
    w = World(md_obj())
    w.run()
    p = w.decide()
    assert p.writes() == [] and p.events == [] and p.metrics == []
    job_name = w.entry("v1")["jobName"]
    waiting = {"reason": "ImagePullBackOff", "message": "no such image"}
    w.pods.append(builder_pod(job_name, {"waiting": waiting}))
    p = w.decide()
    assert p.applied("Job") == [], "an existing Job is never re-applied"
    assert "ImagePullBackOff: no such image" in cond(p, "Built").message


def test_a_finished_build_rolls_out_its_deployment() -> None:
    w = World(md_obj())
    w.run()
    w.finish_build()
    w.settling = False
    p = w.run()
    deps = p.applied("Deployment")
    assert len(deps) == 1 and deps[0]["spec"]["template"]["metadata"]["labels"][common.LABEL_VERSION] == "v1"
    assert [s["metadata"]["name"] for s in p.applied("Secret")] == [f"{NAME}-triton-admin"]
    assert p.new_status is not None and p.new_status.phase == "RollingOut"
    assert p.new_status.history[0].build_key == "bk-v1"
    assert "BuildSucceeded" in reasons(p)
    assert metric(p, "BUILDS", "succeeded") == 1 and metric(p, "ROLLOUTS", "started") == 1
    assert cond(p, "Progressing").reason == "RollingOut" and cond(p, "Ready").status == "False"
    assert p.new_status.current_version is None
    # the rollout in progress: the Deployment is applied and its pods are not ready yet
    p = w.decide()
    assert p.writes() == [], "nothing to do while the Deployment controller works"
    assert p.requeue == decide.BUSY_REQUEUE


def test_rolled_out_serves_then_an_idle_pass_writes_nothing() -> None:
    w = World(md_obj())
    w.run()
    w.finish_build()
    w.run()  # applies the Deployment, settles it
    w.now = T0 + 42
    p = w.run()
    assert (
        p.new_status is not None and p.new_status.current_version == "v1" and p.new_status.phase == "Serving"
    )
    assert "Serving" in reasons(p) and metric(p, "ROLLOUTS", "completed") == 1
    assert metric(p, "SPEC_TO_SERVING") == 42
    w.now += 1000
    idle = w.decide()
    assert idle.writes() == [] and idle.new_status is None and idle.events == [] and idle.metrics == []
    assert idle.requeue == RESYNC


def test_a_failed_build_degrades() -> None:
    w = World(md_obj())
    w.run()
    w.finish_build(ok=False)
    p = w.run()
    assert p.new_status is not None and p.new_status.phase == "Failed"
    assert cond(p, "Degraded").reason == "BuildFailed" and "cosine 0.9 < 0.99" in cond(p, "Degraded").message
    assert metric(p, "BUILDS", "failed") == 1 and p.applied("Deployment") == []


# ---- versions ---------------------------------------------------------------------------------------


def test_editing_the_version_back_reuses_its_build() -> None:
    w = World(md_obj())
    w.serve("v1")
    w.edit(version="v2", model={"name": "digits", "source": {"path": "m2.pt2"}})
    w.serve("v2")
    w.edit(version="v1", model={"name": "digits", "source": {"path": "m.pt2"}})
    p = w.run()
    assert p.applied("Job") == [] and metric(p, "BUILDS", "started") == 0, "no rebuild of a built version"
    deps = p.applied("Deployment")
    assert deps and deps[0]["spec"]["template"]["metadata"]["labels"][common.LABEL_VERSION] == "v1"
    assert p.new_status is not None and p.new_status.target_version == "v1"


def _rollout_v2_fails(w: World, init: list[Obj] | None = None, **pod_state: Any) -> plan.Plan:
    w.serve("v1")
    w.edit(version="v2", model={"name": "digits", "source": {"path": "m2.pt2"}})
    w.run()
    w.finish_build()
    w.settling = False
    w.run()  # applies the v2 Deployment
    dep = w.objects[("Deployment", NAME)]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                   "message": "ReplicaSet md-v2 has timed out progressing"}  # fmt: skip
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": 2, "updatedReplicas": 1,
                     "availableReplicas": 1, "readyReplicas": 1,
                     "conditions": [progressing] if not pod_state else []}  # fmt: skip
    if pod_state:
        w.pods.append(pod("md-v2-x", labels, ip="10.9.9.9", ready=False, **pod_state))
        if init is not None:
            w.pods[-1]["status"]["initContainerStatuses"] = init
    return w.run()


def test_a_missed_deadline_rolls_back() -> None:
    p = _rollout_v2_fails(World(md_obj()))
    deps = p.applied("Deployment")
    assert deps and deps[0]["spec"]["template"]["metadata"]["labels"][common.LABEL_VERSION] == "v1"
    assert p.new_status is not None and p.new_status.failed_version == "v2"
    assert p.new_status.current_version == "v1"
    assert "RolledBack" in reasons(p) and metric(p, "ROLLBACKS") == 1 and metric(p, "ROLLOUTS", "failed") == 1
    assert "timed out progressing" in cond(p, "Degraded").message


def test_a_crash_loop_rolls_back_with_the_containers_last_words() -> None:
    last = {"terminated": {"exitCode": 1, "message": "failed to load model 'digits'"}}
    p = _rollout_v2_fails(World(md_obj()), restartCount=2, lastState=last)
    assert p.new_status is not None and p.new_status.failed_version == "v2"
    assert "RolledBack" in reasons(p)
    assert "failed to load model 'digits'" in cond(p, "Degraded").message


TAMPERED = "repository /store/repositories/bk2 failed verification: modified: digits/1/model.onnx"


def _verify_failed(restarts: int = 0) -> list[Obj]:
    """The init container's status as the kubelet reports it once conch-verify found a changed file."""
    last = {"terminated": {"exitCode": 2, "reason": "Error", "message": TAMPERED}}
    if restarts:
        return [{"name": "verify", "ready": False, "restartCount": restarts, "lastState": last,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]  # fmt: skip
    return [{"name": "verify", "ready": False, "restartCount": 0, "state": last}]


def test_a_tampered_repository_rolls_back_at_once_naming_the_file_and_edit_back_clears_it() -> None:
    w = World(md_obj())
    waiting = {"waiting": {"reason": "PodInitializing"}}
    p = _rollout_v2_fails(w, init=_verify_failed(), state=waiting)
    deps = p.applied("Deployment")
    assert deps and deps[0]["spec"]["template"]["metadata"]["labels"][common.LABEL_VERSION] == "v1"
    assert p.new_status is not None and (p.new_status.failed_version, p.new_status.current_version) == (
        "v2",
        "v1",
    )
    degraded = cond(p, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "RepositoryTampered")
    assert "modified: digits/1/model.onnx" in degraded.message and degraded.message.endswith("serving v1")
    assert "RolledBack" in reasons(p) and "RepositoryTampered" in reasons(p)
    w.pods.clear()  # the v2 pod goes with its ReplicaSet; the reason stays in later passes
    assert w.run().new_status is None, "the next pass keeps the status as it is: no write"
    assert next(c for c in w.md["status"]["conditions"] if c["type"] == "Degraded")["reason"] == (
        "RepositoryTampered"
    )
    w.edit(version="v1", model={"name": "digits", "source": {"path": "m.pt2"}})
    p = w.run()
    assert p.new_status is not None and p.new_status.failed_version is None
    assert (cond(p, "Degraded").status, p.new_status.current_version) == ("False", "v1")


def test_a_tampered_repository_is_read_from_a_restarting_init_container_too() -> None:
    p = _rollout_v2_fails(World(md_obj()), init=_verify_failed(restarts=3), state={"waiting": {}})
    assert cond(p, "Degraded").reason == "RepositoryTampered" and TAMPERED in cond(p, "Degraded").message


def test_without_auto_rollback_a_tampered_repository_is_stuck_and_says_so() -> None:
    w = World(md_obj(rollout={"autoRollback": False}))
    p = _rollout_v2_fails(w, init=_verify_failed(), state={"waiting": {"reason": "PodInitializing"}})
    assert p.applied("Deployment") == [] and p.new_status is not None and p.new_status.failed_version is None
    degraded = cond(p, "Degraded")
    assert degraded.reason == "RepositoryTampered" and "modified: digits/1/model.onnx" in degraded.message


def test_without_auto_rollback_a_missed_deadline_is_stuck() -> None:
    p = _rollout_v2_fails(World(md_obj(rollout={"autoRollback": False})))
    assert p.applied("Deployment") == [] and "RolledBack" not in reasons(p)
    assert p.new_status is not None and p.new_status.failed_version is None
    assert cond(p, "Degraded").reason == "ProgressDeadlineExceeded" and p.new_status.phase == "Degraded"


def test_history_pruning_deletes_old_jobs() -> None:
    w = World(md_obj(revisionHistoryLimit=1))
    w.serve("v1")
    v1_job = w.entry("v1")["jobName"]
    w.edit(version="v2", model={"name": "digits", "source": {"path": "m2.pt2"}})
    w.run()
    w.finish_build()
    w.run()
    p = w.run()  # v2 serves: v1 is neither wanted nor serving, and over the limit
    assert p.new_status is not None and [h.version for h in p.new_status.history] == ["v2"]
    assert p.absent == [f"/apis/batch/v1/namespaces/{NS}/jobs/{v1_job}"]


def test_an_invalid_spec_says_so_and_touches_nothing() -> None:
    w = World(md_obj())
    w.serve("v1")
    del w.md["spec"]["model"]
    w.md["metadata"]["generation"] += 1
    p = w.decide()
    assert p.children == [] and p.absent == [] and p.requeue is None
    built = cond(p, "Built")
    assert (built.status, built.reason) == ("False", "InvalidSpec") and "spec.model" in built.message
    assert p.new_status is not None and p.new_status.current_version == "v1", "serving status is kept"
    assert "InvalidSpec" in reasons(p)
    w.act(p)
    assert w.decide().writes() == [], "an invalid spec is reported once"


def test_optional_children_follow_the_spec() -> None:
    w = World(md_obj(replicas=2))
    w.serve("v1")
    assert ("PodDisruptionBudget", NAME) in w.objects, "two pods get a PDB"
    w.edit(replicas=1)
    p = w.decide()
    assert p.absent == [f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}"]
    w.objects[("PodDisruptionBudget", NAME)]["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    assert w.decide().absent == [], "what we do not own is never deleted"


def test_a_service_monitor_follows_its_api() -> None:
    w = World(md_obj(monitoring={"serviceMonitor": {"enabled": True}}))
    w.serve("v1")
    status = types.ModelDeploymentStatus.model_validate(w.md["status"])
    monitoring = status.condition("Monitoring")
    assert monitoring is not None and monitoring.reason == "ServiceMonitorUnavailable"
    assert ("ServiceMonitor", NAME) not in w.objects
    w.served = True
    p = w.decide()
    assert [m["metadata"]["name"] for m in p.applied("ServiceMonitor")] == [NAME]
    assert cond(p, "Monitoring").reason == "ServiceMonitorApplied"


# ---- canary -----------------------------------------------------------------------------------------


CANARY = {
    "strategy": "canary",
    "canary": {
        "steps": [{"weight": 50, "pauseSeconds": 60}],
        "analysis": {"prometheusUrl": "http://prom:9090", "intervalSeconds": 30, "minSuccessRate": 0.99},
    },
}


def canary_world() -> World:
    """v1 serves on two pods; spec.version moves to v2, whose build has finished."""
    w = World(md_obj(replicas=2, rollout=CANARY, monitoring={"serviceMonitor": {"enabled": True}}))
    w.served = True
    w.serve("v1")
    w.edit(version="v2", model={"name": "digits", "source": {"path": "m2.pt2"}})
    w.run()
    w.finish_build()
    return w


def test_a_canary_starts_beside_the_stable() -> None:
    w = canary_world()
    p = w.run()
    canaries = [
        d for d in p.applied("Deployment") if d["metadata"]["name"] == NAME + deployment.CANARY_SUFFIX
    ]
    assert len(canaries) == 1 and canaries[0]["spec"]["replicas"] == 1
    assert canaries[0]["spec"]["template"]["metadata"]["labels"][common.LABEL_VERSION] == "v2"
    assert "CanaryStarted" in reasons(p) and "CanaryStep" in reasons(p)
    assert p.new_status is not None and p.new_status.current_version == "v1"
    assert p.new_status.canary is not None and p.new_status.canary.version == "v2"
    assert decide.analysis_query(w.snap()) is None, (
        "no analysis before the step's pods are ready and an interval"
    )


def _canary_step_reached(w: World) -> None:
    """Passes until the first step's pods are ready (the stable shrinks only as they are), then the
    analysis interval."""
    for _ in range(6):
        w.run()
        st = types.ModelDeploymentStatus.model_validate(w.md["status"]).canary
        if st is not None and st.step_started_at is not None:
            break
    assert st is not None and st.step_started_at is not None, st
    assert decide.analysis_query(w.snap()) is None, "not before an interval"
    w.now += 30


def test_a_due_analysis_is_asked_then_a_pass_and_the_pause_promote() -> None:
    w = canary_world()
    _canary_step_reached(w)
    query = decide.analysis_query(w.snap())
    assert query is not None and query.url == "http://prom:9090"
    assert 'serving_conch_dev_version="v2"' in query.queries["canary_success"]
    w.measured = canary.Measurement("Passed", (), "successRate 1 >= 0.99")
    p = w.run()
    assert metric(p, "CANARY_ANALYSES", "passed", "metrics") == 1
    assert p.new_status is not None and p.new_status.canary is not None
    assert p.new_status.canary.phase == "Progressing" and "the pause" in p.new_status.canary.message
    assert p.requeue == 30  # the rest of the 60 s pause
    w.now += 30
    w.measured = canary.Measurement("Passed", (), "successRate 1 >= 0.99")
    for _ in range(6):
        p = w.run()
        if "CanaryPromoted" in reasons(p):
            break
    assert "CanaryPromoted" in reasons(p) and metric(p, "ROLLOUTS", "promoted") == 1
    assert p.new_status is not None and p.new_status.current_version == "v2"


def test_prometheus_unavailable_pauses_the_canary() -> None:
    w = canary_world()
    _canary_step_reached(w)
    w.measured = canary.Measurement("Unavailable", (), "Prometheus at http://prom:9090: refused")
    p = w.run()
    progressing = cond(p, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "AnalysisUnavailable")
    assert "refused" in progressing.message and "CanaryPromoted" not in reasons(p)


def test_a_failed_analysis_aborts_the_canary() -> None:
    w = canary_world()
    _canary_step_reached(w)
    w.measured = canary.Measurement("Failed", (), "successRate 0.62 not >= 0.99")
    p = w.run()
    assert "CanaryAborted" in reasons(p) and metric(p, "ROLLOUTS", "aborted") == 1
    canaries = [
        d for d in p.applied("Deployment") if d["metadata"]["name"] == NAME + deployment.CANARY_SUFFIX
    ]
    assert canaries and canaries[0]["spec"]["replicas"] == 0, "the canary is scaled away"
    assert p.new_status is not None and p.new_status.failed_version == "v2"
    assert p.new_status.current_version == "v1"
    assert cond(p, "Degraded").reason == "AnalysisFailed" and "0.62" in cond(p, "Degraded").message


def test_an_analysis_not_due_is_ignored() -> None:
    w = canary_world()
    w.run()
    w.measured = canary.Measurement("Failed", (), "stale")  # nobody asked: the step is not reached
    p = w.run()
    assert "CanaryAborted" not in reasons(p) and metric(p, "CANARY_ANALYSES", "failed", "metrics") == 0
