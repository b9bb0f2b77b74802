"""The rolling strategy: one Deployment, rolled from version to version by the Deployment controller.

The default of spec.rollout.strategy, and what serves whenever no canary runs or is being scaled
away (`strategy.choose`). It applies the admin-key Secret and the stable Deployment of the version
`rollout.next_step` chose; the Deployment controller does the rest (maxSurge, the progress deadline).
Pure, like the other deciders: it answers with a `passctx.Outcome`.

`stable_deployment` is the one home of the keep-the-template rule (`rollout.keeps_template`), used by
this strategy and by the canary's (`canaryflow`), whose stable Deployment is this same object.
"""

from __future__ import annotations

from typing import Any

from conch import passctx, plan, rollout, snapshot
from conch.render import deployment, secret

Obj = dict[str, Any]


class Rolling:
    """The rolling update (`strategy.Strategy`)."""

    def analysis_query(self, ctx: passctx.Context) -> snapshot.Query | None:
        """A rolling update asks Prometheus nothing."""
        return None

    def serve(self, ctx: passctx.Context, *, new_key: str) -> passctx.Outcome:
        """The admin-key Secret (`new_key` when none exists yet) and the Deployment of the version to
        serve; the last canary's record stays in status as it was."""
        snap, decision = ctx.snap, ctx.decision
        out = passctx.Outcome(decision, record=ctx.old.canary)
        if decision.serve is None:
            return out
        out.children.append(admin_secret(ctx, new_key))
        child = plan.Child(stable_deployment(ctx, decision.serve, decision.failed), snap.stable_deployment)
        out.children.append(child)
        if child.changes and ctx.state.version != decision.serve.version:
            out.metrics.append(plan.Metric("ROLLOUTS", ("started",)))
        return out


def admin_secret(ctx: passctx.Context, new_key: str) -> plan.Child:
    """The admin-key Secret every serving pod reads (`new_key` only when none exists yet: generated
    once, then kept). Both strategies apply it, so one deleted by hand comes back mid-canary too."""
    key = secret.key_of(ctx.snap.admin_secret) or new_key
    return plan.Child(secret.render_secret(ctx.owner, key), ctx.snap.admin_secret)


def stable_deployment(ctx: passctx.Context, served: deployment.Served, failed: str | None) -> Obj:
    """The stable Deployment serving `served`. While that is not the wanted version (and the wanted
    one has not `failed`), the live pods keep the template they run with (`rollout.keeps_template`)."""
    desired = deployment.render_deployment(ctx.owner, served)
    live = ctx.snap.stable_deployment
    if live is not None and rollout.keeps_template(served.version, ctx.state.version, ctx.wanted, failed):
        desired["spec"]["template"] = live["spec"]["template"]
    return desired
