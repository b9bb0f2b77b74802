"""The rollout strategy seam: what a strategy answers, and the one place a pass chooses it.

A strategy decides how the wanted version comes to serve: the serving children, what status records,
the Events and the next pass (`serve`), and which Prometheus checks are due first (`analysis_query`).
`rolling.Rolling` and `canaryflow.Canary` are the two today; a blue-green or shadow strategy is one
more class and one more line in `choose`, with `decide` untouched. Both read the pass' facts from
`passctx.Context` and answer with a `passctx.Outcome`.
"""

from __future__ import annotations

from typing import Protocol

from conch import canaryflow, passctx, rolling, snapshot


class Strategy(Protocol):
    """How spec.version comes to serve."""

    def analysis_query(self, ctx: passctx.Context) -> snapshot.Query | None:
        """The Prometheus checks due this pass (the controller asks them before `serve`), or None."""
        ...

    def serve(self, ctx: passctx.Context, *, new_key: str) -> passctx.Outcome:
        """The serving children and what status records (`new_key`: an admin key, if none exists)."""
        ...


def choose(ctx: passctx.Context) -> Strategy:
    """The strategy of this pass: a canary of spec.version when spec.rollout.strategy asks for one and
    it can run (a stable version serves and the wanted one is built, new, and has not failed); what is
    left of an earlier canary, scaled away; otherwise the rolling update."""
    if ctx.spec.rollout.strategy == "canary" and canaryflow.can_run(ctx):
        return canaryflow.Canary.running(ctx)
    left = canaryflow.Canary.left_behind(ctx)
    return left if left is not None else rolling.Rolling()
