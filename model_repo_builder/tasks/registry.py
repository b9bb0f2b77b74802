"""The task registry: one entry per task, chosen from the recipe; the pipeline builds through it.

Each entry says how its models are built, from load to publish (`Task.fresh`): the tensor entry runs
`tasks.tensor`; the text entries (`embedding`, `classification`) run the shared text path
(`tasks.text`) with their own hooks (`textkind.TextTask`: load class, reference and served answers,
gate metrics, ensemble outputs and post step, probes, distillation target, record).

A new task is one new entry plus its own modules: a module here defining an object with ``name``
(a new constant in `tasknames`) and ``fresh``, listed in ENTRIES below. A text task subclasses
`text.TextEntry` and implements its hooks; a new family (e.g. generative models) brings its own path
module, like `tensor` and `text`, and its loaders under `sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .. import tasknames
from ..recipe import Recipe
from ..request import BuildRequest, BuildResult, Steps
from ..sources.fetch import FetchedSource
from . import classification, embedding, generation, tensor


class Task(Protocol):
    """A registry entry: the task's name and its build, from fetched source to published repository."""

    @property
    def name(self) -> str:
        """The task's name (`tasknames`)."""

    def fresh(
        self, req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
    ) -> BuildResult:
        """Build and publish the repository of `req` at `final` (the gate must pass first)."""


ENTRIES: dict[str, Task] = {
    t.name: t for t in (tensor.TASK, embedding.TASK, classification.TASK, generation.TASK)
}


def task_name(recipe: Recipe) -> str:
    """The recipe's task: text.task, or the tensor task when the recipe has no text section."""
    return recipe.text.task if recipe.text is not None else tasknames.TENSOR


def for_recipe(recipe: Recipe) -> Task:
    """The entry that builds `recipe`'s model."""
    return ENTRIES[task_name(recipe)]
