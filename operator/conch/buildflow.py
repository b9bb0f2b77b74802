"""A build's pass, decided: start, follow or reuse the build of spec.version.

The first thing a pass works out, before any rollout strategy runs: whether the wanted version has a
build (a Succeeded history entry), one under way (its Job and the Job's pod, read by `build.observe`)
or none yet (a Job to start). The history it leaves is what every later step of the pass reads (the
versions ready to serve, the wanted entry), so `passctx.gather` runs it once and keeps its answer.
Pure: the Job to create, the superseded Job to delete and the metrics come back as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conch import apply, build, kube, plan, snapshot
from conch.api import keys, types
from conch.render import common, job


@dataclass(frozen=True)
class Step:
    """What the build step found (the history, the wanted version's entry, a note for Built) and
    what it asks for (the Job to create, the superseded one to delete, the BUILDS metrics)."""

    history: tuple[types.HistoryEntry, ...]
    entry: types.HistoryEntry  # spec.version's, after this step
    message: str = ""  # e.g. the builder's image cannot be pulled; an immutable version's other spec
    children: tuple[plan.Child, ...] = ()
    absent: tuple[str, ...] = ()
    metrics: tuple[plan.Metric, ...] = ()


@dataclass
class _Acc:
    history: list[types.HistoryEntry]
    message: str = ""
    children: list[plan.Child] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    metrics: list[plan.Metric] = field(default_factory=list)

    def replace(self, entry: types.HistoryEntry) -> None:
        self.history = [h for h in self.history if h.version != entry.version] + [entry]


def step(
    snap: snapshot.Snapshot, owner: common.Owner, key: str, timestamp: str, old: types.ModelDeploymentStatus
) -> Step:
    """Start, follow or reuse the build of the wanted version (`key`: the spec's key)."""
    acc = _Acc(list(old.history))
    spec, wanted = owner.spec, owner.spec.version
    entry = old.entry(wanted)
    if entry is not None and entry.result == "Succeeded":
        if entry.spec_key != key:
            acc.message = (
                f"version {wanted} was built from a different model/recipe; versions are immutable, "
                "so its recorded build is served: set a new spec.version to build this spec"
            )
        return _done(acc, entry)
    if entry is None or entry.spec_key != key:
        live = snap.job(entry.job_name) if entry is not None and entry.result == "Building" else None
        if live is not None and apply.owned(live, owner.uid):  # a superseded build of this version
            acc.absent.append(kube.path_of(live))
        entry = types.HistoryEntry(
            version=wanted,
            spec_key=key,
            job_name=keys.job_name(owner.name, key),
            result="Building",
            model_name=spec.model.name,
            started_at=timestamp,
        )
        acc.replace(entry)
        acc.metrics.append(plan.Metric("BUILDS", ("started",)))
    if entry.result == "Building":
        entry = _follow(snap, owner, acc, entry, timestamp)
    return _done(acc, entry)


def _follow(
    snap: snapshot.Snapshot, owner: common.Owner, acc: _Acc, entry: types.HistoryEntry, timestamp: str
) -> types.HistoryEntry:
    live = snap.job(entry.job_name)
    if live is None:  # a Job's template is immutable: it is created once, never re-applied
        acc.children.append(plan.Child(job.render_job(owner, entry.version, entry.spec_key), None))
    outcome = build.observe(live, snap.pods_with({snapshot.JOB_NAME_LABEL: entry.job_name}))
    if outcome.result == "Building":
        acc.message = outcome.message or ""
        return entry
    update: dict[str, object] = {"result": outcome.result, "finished_at": timestamp}
    if outcome.summary is not None:
        update["summary"] = outcome.summary
        if outcome.result == "Succeeded":
            update["build_key"] = outcome.summary.build_key
    if outcome.message is not None:
        update["message"] = outcome.message
    entry = entry.model_copy(update=update)
    acc.replace(entry)
    acc.metrics.append(plan.Metric("BUILDS", (outcome.result.lower(),)))
    return entry


def _done(acc: _Acc, entry: types.HistoryEntry) -> Step:
    return Step(
        tuple(acc.history), entry, acc.message, tuple(acc.children), tuple(acc.absent), tuple(acc.metrics)
    )
