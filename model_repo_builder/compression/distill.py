"""Knowledge distillation: train the compressed student to answer like the original teacher.

Pruning removes what the model needs least, but it still costs accuracy; distillation wins it back
by training the student on the teacher's own outputs, so it needs inputs but no labels. The loss
follows the output kind: KL divergence on temperature-softened logits for classifiers (plus
cross-entropy when the data has labels), cosine or MSE for embeddings and other outputs. The
teacher's answers are computed once, before training, except with mixup (tensor models): the student
then trains on mixtures of two samples, which the teacher answers as they come.

Training is deterministic for a seed on one machine: batches come from a seeded generator, the
student runs in eval mode (no dropout, BatchNorm statistics frozen: the teacher's are right for the
data) and torch uses a fixed number of threads, bounded by the Job's CPU limit (see `cpu_threads`).
Pruned weights stay zero (a mask is re-applied after each step). Progress is logged every
`logEvery` steps; the Job's deadline is checked as training goes and the build fails early, with a
message saying how long it would take, when distillation would not finish in time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from ..errors import BadInput
from ..recipe import Distill, LossKind

Masks = dict[nn.Parameter, torch.Tensor]
THREADS_ENV = "CONCH_BUILD_THREADS"
RESERVE = 0.2
"""Fraction of the Job's deadline kept for what follows distillation (export, quantize, gate)."""
FIRST_CHECK = 4
"""The deadline is first checked after this step (the pace is measured from the end of step 1,
which pays for allocations), then every logEvery steps."""
CURVE_POINTS = 20


@dataclass
class Task:
    """What to train on: `forward` maps sample indices to the student's outputs and the teacher's."""

    size: int
    forward: Callable[[torch.Tensor], tuple[list[torch.Tensor], list[torch.Tensor]]]
    targets: list[torch.Tensor]  # the teacher's outputs for every sample, batch first (scales the MSE)
    labels: torch.Tensor | None
    loss: LossKind
    learning_rate: float


@dataclass
class Clock:
    """When the build started and, if the Job has one, its deadline in seconds from then."""

    started: float
    deadline: float | None = None

    def elapsed(self) -> float:
        """Seconds since the build started."""
        return time.monotonic() - self.started


def cpu_threads() -> tuple[int, str]:
    """Threads for training and where the number comes from.

    CONCH_BUILD_THREADS wins; else the container's CPU limit (cgroup v2 cpu.max or v1 cfs quota,
    rounded up), capped by the CPUs this process may run on (sched_getaffinity).
    """
    usable = len(os.sched_getaffinity(0))
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise BadInput(f"{THREADS_ENV}={env!r}: expected a positive integer")
        return int(env), THREADS_ENV
    quota = _cgroup_cpus()
    if quota is not None and quota < usable:
        return quota, "cgroup CPU limit"
    return usable, "sched_getaffinity"


def _cgroup_cpus() -> int | None:
    for path, parse in (
        (Path("/sys/fs/cgroup/cpu.max"), _v2_quota),
        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _v1_quota),
    ):
        try:
            value = parse(path)
        except (OSError, ValueError):
            continue
        if value is not None:
            return max(1, math.ceil(value))
    return None


def _v2_quota(path: Path) -> float | None:
    quota, period = path.read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(path: Path) -> float | None:
    quota = int(path.read_text())
    period = int((path.parent / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 else quota / period


@contextmanager
def threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def loss_fn(kind: LossKind, spec: Distill, targets: list[torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The distillation loss over all outputs; MSE is scaled by each target's mean square."""
    scale = [float(t.double().pow(2).mean().clamp(min=1e-12)) for t in targets]
    temp = spec.temperature

    def one(i: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if kind == "kl":
            s2, t2 = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
            log_p = torch.log_softmax(s2 / temp, dim=-1)
            q = torch.softmax(t2 / temp, dim=-1)
            return nn.functional.kl_div(log_p, q, reduction="batchmean") * temp * temp
        if kind == "cosine":
            return (1.0 - nn.functional.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean()
        return nn.functional.mse_loss(s, t) / scale[i]

    def total(
        outs: list[torch.Tensor], tgts: list[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        soft = sum((one(i, s, t) for i, (s, t) in enumerate(zip(outs, tgts, strict=True))), torch.zeros(()))
        if labels is None or kind != "kl" or spec.hard_label_weight == 0:
            return soft
        hard = nn.functional.cross_entropy(outs[0].reshape(len(labels), -1), labels)
        return (1 - spec.hard_label_weight) * soft + spec.hard_label_weight * hard

    return total


def _schedule(steps: int) -> Callable[[int], float]:
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return factor


def _order(size: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Batches of sample indices: a fresh seeded permutation each epoch."""
    gen = torch.Generator().manual_seed(seed)
    batch = min(batch, size)
    while True:
        perm = torch.randperm(size, generator=gen)
        for start in range(0, size - batch + 1, batch):
            yield perm[start : start + batch]


def train(
    student: nn.Module, task: Task, spec: Distill, *, masks: Masks, clock: Clock, log: TextIO
) -> dict[str, Any]:
    """Run spec.steps optimizer steps; returns the report for build.json."""
    count, source = cpu_threads()
    torch.manual_seed(spec.seed)
    student.train(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=task.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(spec.steps))
    objective = loss_fn(task.loss, spec, task.targets)
    losses: list[float] = []
    pace = _Pace(time.monotonic())
    with threads(count):
        for step, idx in zip(range(spec.steps), _order(task.size, spec.batch_size, spec.seed), strict=False):
            optimizer.zero_grad(set_to_none=True)
            labels = task.labels[idx] if task.labels is not None else None
            loss = objective(*task.forward(idx), labels)
            if not torch.isfinite(loss):
                raise BadInput(
                    f"distillation diverged at step {step + 1} (loss {loss.item()}): "
                    "lower distill.learningRate"
                )
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            _apply_masks(masks)
            losses.append(float(loss.item()))
            _progress(step + 1, spec, losses, pace=pace, clock=clock, log=log)
    wall = time.monotonic() - pace.start
    return _report(spec, task, losses, wall, (count, source))


def _apply_masks(masks: Masks) -> None:
    with torch.no_grad():
        for param, mask in masks.items():
            param.mul_(mask)


@dataclass
class _Pace:
    start: float
    after_first: float | None = None


def _progress(
    step: int, spec: Distill, losses: list[float], *, pace: _Pace, clock: Clock, log: TextIO
) -> None:
    now = time.monotonic()
    if step == 1:
        pace.after_first = now
    if step == spec.steps or step % spec.log_every == 0:
        window = losses[-min(len(losses), spec.log_every) :]
        log.write(
            f"[builder] distill step {step}/{spec.steps} loss {sum(window) / len(window):.5f} "
            f"({now - pace.start:.1f}s)\n"
        )
        log.flush()
    if pace.after_first is not None and (
        step == FIRST_CHECK or (step > FIRST_CHECK and step % spec.log_every == 0)
    ):
        _check_deadline(step, spec.steps, (now - pace.after_first) / (step - 1), clock)


def _check_deadline(step: int, steps: int, per_step: float, clock: Clock) -> None:
    """Fail now when the remaining steps, at the pace so far, would overrun the Job's deadline."""
    if clock.deadline is None or step >= steps:
        return
    finish = clock.elapsed() + per_step * (steps - step)
    budget = clock.deadline * (1 - RESERVE)
    if finish > budget:
        raise BadInput(
            f"distillation would not finish before the Job's deadline: {steps} steps at {per_step:.2f}s "
            f"a step end {finish:.0f}s into the build, but the deadline is {clock.deadline:.0f}s "
            f"(activeDeadlineSeconds; {RESERVE:.0%} kept for export, quantize and gate): lower "
            "distill.steps or distill.batchSize, or raise spec.build.activeDeadlineSeconds or the "
            "build's CPU (spec.build.resources)"
        )


def _report(
    spec: Distill, task: Task, losses: list[float], wall: float, threads_used: tuple[int, str]
) -> dict[str, Any]:
    every = max(1, len(losses) // CURVE_POINTS)
    points = [
        [min(i + every, len(losses)), round(sum(losses[i : i + every]) / len(losses[i : i + every]), 6)]
        for i in range(0, len(losses), every)
    ]
    head, tail = losses[: max(1, every)], losses[-max(1, every) :]
    report: dict[str, Any] = {
        "steps": len(losses),
        "batchSize": min(spec.batch_size, task.size),
        "learningRate": task.learning_rate,
        "loss": task.loss,
        "seed": spec.seed,
        "threads": {"count": threads_used[0], "from": threads_used[1]},
        "wallSeconds": round(wall, 3),
        "secondsPerStep": round(wall / max(1, len(losses)), 5),
        "lossCurve": {
            "first": round(sum(head) / len(head), 6),
            "last": round(sum(tail) / len(tail), 6),
            "min": round(min(losses), 6),
            "points": points,
        },
    }
    if task.loss == "kl":
        report["temperature"] = spec.temperature
        if task.labels is not None and spec.hard_label_weight > 0:
            report["hardLabelWeight"] = spec.hard_label_weight
    return report
