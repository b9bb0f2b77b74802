"""What one reconcile pass decided, as plain data: the decide step's answer and the act step's orders.

A pass is observe (conch.snapshot) -> decide (conch.decide, pure) -> act (controller.py through
conch.apply). This module is the contract between the last two: the children to apply (each with the
live object the snapshot saw, so acting reads nothing), the children to delete, the status to write
(None: unchanged), the Events, the metric increments and the requeue delay. Keeping it data makes a
decision comparable in a table test, and "nothing changed" is a property of the Plan (`writes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conch import apply, status
from conch.api import types

Obj = dict[str, Any]


@dataclass(frozen=True)
class Child:
    """A child object to apply: what we want and what the snapshot saw (None: absent)."""

    desired: Obj
    live: Obj | None

    @property
    def changes(self) -> bool:
        """Whether applying it sends a write (apply.apply skips an up-to-date object)."""
        return not apply.up_to_date(self.desired, self.live)


@dataclass(frozen=True)
class Metric:
    """A metric to move: an attribute of conch.metrics, its label values, and the increment (counters)
    or the observation (histograms)."""

    name: str
    labels: tuple[str, ...] = ()
    value: float = 1.0


@dataclass
class Plan:
    """Everything a pass does, in the order act does it: deletes, applies, status, events, metrics."""

    children: list[Child] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # REST paths of owned children that exist and must go
    taken: list[str] = field(default_factory=list)  # REST paths of children left out: another owner's name
    new_status: types.ModelDeploymentStatus | None = None  # None: the live status is already this
    events: list[status.Event] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    requeue: float | None = None  # seconds until the next pass; None: none (invalid spec)

    def writes(self) -> list[str]:
        """What acting on this plan would send to the apiserver, besides Events (empty: nothing)."""
        out = [f"delete {url}" for url in self.absent]
        out += [
            f"apply {c.desired['kind']}/{c.desired['metadata']['name']}" for c in self.children if c.changes
        ]
        return out + (["status"] if self.new_status is not None else [])

    def applied(self, kind: str) -> list[Obj]:
        """The desired objects of `kind` that acting would write."""
        return [c.desired for c in self.children if c.desired["kind"] == kind and c.changes]
