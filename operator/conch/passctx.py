"""The facts of one reconcile pass, worked out once, and what a rollout strategy answers with.

A pass needs the same facts in many places: the parsed spec and its key, the owner, the old status,
the history after the build step, the versions ready to serve, the version serving, the wanted
version's history entry, the stable Deployment's state and the rolling decision. `gather` works them
out once, before any strategy runs; `decide.analysis_query` and `decide.decide` (and through them the
strategies: `rolling`, `canaryflow`) read this one Context, so no part of a pass parses the spec,
hashes it or walks the history again. The snapshot rides along: when the Prometheus answer comes,
`with_measurement` rebinds it without recomputing anything.

`Outcome` is the other half of the strategy seam (`strategy.Strategy`): what serving the wanted
version took, in the one shape `decide` folds into the plan and the status.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pydantic

from conch import buildflow, canary, clock, errors, plan, rollout, snapshot, status
from conch.api import keys, types
from conch.render import common, deployment, verify


@dataclass(frozen=True)
class Invalid:
    """A spec the schema let through but the operator cannot use: the pass only says so."""

    snap: snapshot.Snapshot
    old: types.ModelDeploymentStatus
    generation: int
    timestamp: str
    error: Exception


@dataclass(frozen=True)
class Context:
    """What one pass knows before it decides how to serve."""

    snap: snapshot.Snapshot
    spec: types.ModelDeploymentSpec
    owner: common.Owner
    key: str  # keys.spec_key(spec)
    old: types.ModelDeploymentStatus
    generation: int
    timestamp: str  # the pass' time, as status writes it
    build: buildflow.Step  # the history after the build step, and what the step asks for
    ready: dict[str, deployment.Served]  # versions with a successful build
    current: str | None  # the version status says serves, if still ready
    state: rollout.DeploymentState  # the stable Deployment (with its rolling pods' crash, if any)
    decision: rollout.Decision  # the rolling decision, before any strategy adjusts it

    @property
    def wanted(self) -> str:
        """spec.version."""
        return self.spec.version

    @property
    def history(self) -> tuple[types.HistoryEntry, ...]:
        """The history after the build step."""
        return self.build.history

    @property
    def entry(self) -> types.HistoryEntry:
        """The wanted version's history entry (the build step always leaves one)."""
        return self.build.entry


@dataclass
class Outcome:
    """What a strategy decided for the serving children, status and the next pass."""

    decision: rollout.Decision  # what status records (a canary keeps the stable current)
    children: list[plan.Child] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    metrics: list[plan.Metric] = field(default_factory=list)
    events: list[status.Event] = field(default_factory=list)
    conditions: dict[str, status.Cond] = field(default_factory=dict)  # overrides, by type
    moving: bool = False  # the wanted version is on its way in, beyond what decision.serve says
    requeue: float | None = None  # None: decide's default (busy while building or rolling, else resync)
    record: types.CanaryStatus | None = None  # the strategy's own status record (status.canary)


def gather(snap: snapshot.Snapshot) -> Context | Invalid:
    """The pass' facts: parse the spec (once), hash it (once), run the build step and the rolling
    decision. A spec the operator cannot use is an Invalid."""
    generation = snap.md["metadata"].get("generation", 0)
    old = types.ModelDeploymentStatus.model_validate(snap.md.get("status") or {})
    timestamp = clock.format_time(snap.now)
    try:
        return _gather(snap, old, generation, timestamp)
    except (pydantic.ValidationError, errors.InvalidSpecError) as exc:
        return Invalid(snap, old, generation, timestamp, exc)


def _gather(
    snap: snapshot.Snapshot, old: types.ModelDeploymentStatus, generation: int, timestamp: str
) -> Context:
    meta = snap.md["metadata"]
    spec = types.ModelDeploymentSpec.model_validate(snap.md.get("spec") or {})
    key = keys.spec_key(spec)
    if spec.auth is None:  # after the key: auth never rebuilds
        spec = spec.model_copy(update={"auth": types.Auth(mode=snap.default_auth)})
    owner = common.Owner(meta["name"], meta["namespace"], meta["uid"], spec)
    built = buildflow.step(snap, owner, key, timestamp, old)
    ready = rollout.built(built.history)
    current = rollout.serving(old, ready)
    state = _with_crashes(snap, owner, rollout.observe(snap.stable_deployment))
    decision = rollout.next_step(
        spec.version, ready, current, failed_version=old.failed_version, state=state,
        auto_rollback=spec.rollout.auto_rollback,
    )  # fmt: skip
    return Context(snap, spec, owner, key, old, generation, timestamp, built, ready, current, state, decision)


def _with_crashes(
    snap: snapshot.Snapshot, owner: common.Owner, state: rollout.DeploymentState
) -> rollout.DeploymentState:
    """While a version rolls out, look at its pods: a crash loop fails the rollout before the deadline."""
    if not state.exists or state.version is None or rollout.rolled_out(state, state.version):
        return state
    pods = snap.pods_with({**common.selector(owner), common.LABEL_VERSION: state.version})
    cause = verify.REASON if rollout.tampered(pods) else ""
    return dataclasses.replace(
        state, crash=rollout.crash_reason(pods), waiting=rollout.waiting_reason(pods), cause=cause
    )


def with_measurement(ctx: Context, measured: canary.Measurement | None) -> Context:
    """The context with the due analysis' answer in its snapshot; nothing else is worked out again."""
    return dataclasses.replace(ctx, snap=snapshot.with_measurement(ctx.snap, measured))
