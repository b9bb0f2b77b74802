"""A probe set through one Triton pod over its HTTP/REST v2 API (tritonclient), bounded.

Used by `analyze`. Each pod is asked for its model's metadata (input and output names and types) and
config (max batch size), then the probes go in batches. One client per pod with connect and network
timeouts; every inference request is counted against a shared Budget (at most ``max_requests``, none
started after ``deadline`` seconds). Errors say which pod (role and address) and which probes. Pods
that require inference tokens (spec.auth) get the Target's token as `Authorization: Bearer`; it is in
no message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import probes

Arrays = dict[str, NDArray[Any]]


class AskError(Exception):
    """A pod could not give the answers; the message names it."""


class UnreachableError(AskError):
    """The pod did not answer at all (refused, timed out)."""


class NotServedError(AskError):
    """The pod answered but does not describe the model (unknown model, not ready)."""


class RefusedError(AskError):
    """The pod answered an inference request with an error."""


class OutOfBudgetError(AskError):
    """The request budget or the deadline ran out."""


@dataclass(frozen=True)
class Limits:
    """How much the analysis may send and for how long."""

    timeout: float = 10.0
    deadline: float = 120.0
    max_requests: int = 512
    batch_size: int | None = None


@dataclass
class Budget:
    """Requests sent so far against the limits."""

    limits: Limits
    started: float = field(default_factory=time.monotonic)
    requests: int = 0

    def spend(self, address: str) -> None:
        """Count one request, or OutOfBudgetError."""
        if self.requests >= self.limits.max_requests:
            raise OutOfBudgetError(
                f"request budget spent ({self.limits.max_requests}) before {address} answered"
            )
        if time.monotonic() - self.started > self.limits.deadline:
            raise OutOfBudgetError(f"deadline of {self.limits.deadline:g}s passed before {address} answered")
        self.requests += 1


@dataclass(frozen=True)
class Target:
    """One Triton pod and the model asked there."""

    role: str  # "canary" | "stable"
    address: str  # host:port of the HTTP endpoint
    model: str
    token: str | None = field(default=None, repr=False)  # an inference token, when the pods need one

    def headers(self) -> dict[str, str] | None:
        return {"Authorization": f"Bearer {self.token}"} if self.token else None


def read_token(directory: Path) -> str | None:
    """A token from a mounted token Secret (every value is a valid one: the first file, by name)."""
    for entry in sorted(directory.iterdir()):
        if not entry.name.startswith(".") and entry.is_file() and entry.read_text().strip():
            return entry.read_text().strip()
    return None


def _describe(client: Any, target: Target) -> tuple[dict[str, Any], int]:
    """(model metadata, max_batch_size)."""
    from tritonclient.utils import InferenceServerException

    try:
        metadata = client.get_model_metadata(target.model, headers=target.headers())
        config = client.get_model_config(target.model, headers=target.headers())
        return metadata, int(config.get("max_batch_size", 0))
    except InferenceServerException as exc:
        raise NotServedError(f"{target.role} {target.address}: model {target.model!r}: {exc}") from exc
    except Exception as exc:  # connection refused, timeouts: the transport's own errors
        raise UnreachableError(f"cannot reach {target.role} {target.address}: {exc!r}") from exc


def _feed(inputs: Arrays, metadata: dict[str, Any], target: Target) -> list[tuple[str, str, NDArray[Any]]]:
    """(name, datatype, array) per model input, from the probe set."""
    from tritonclient.utils import triton_to_np_dtype

    feed = []
    for spec in metadata.get("inputs", []):
        name, datatype = spec["name"], spec["datatype"]
        if name not in inputs:
            raise NotServedError(
                f"the probe set has no input {name!r} that {target.role} {target.address} model "
                f"{target.model!r} takes (it has {sorted(inputs)})"
            )
        array = inputs[name]
        if datatype == "BYTES":
            array = np.array([str(v).encode() for v in array.reshape(-1)], dtype=object).reshape(array.shape)
        else:
            array = array.astype(triton_to_np_dtype(datatype))
        feed.append((name, datatype, array))
    return feed


def ask(target: Target, probe_set: probes.ProbeSet, budget: Budget, batch: int | None) -> Arrays:
    """Every probe through `target`, in batches of `batch` or the pod's model's max batch size,
    whichever is smaller (canary and stable may differ); output name -> answers [N, ...], BYTES as str."""
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    limits = budget.limits
    client = triton_http.InferenceServerClient(
        target.address, connection_timeout=limits.timeout, network_timeout=limits.timeout
    )
    try:
        metadata, max_batch = _describe(client, target)
        feed = _feed(probe_set.inputs, metadata, target)
        size = min(batch or max_batch, max_batch) if max_batch > 0 else 1  # each pod's own limit
        names = [o["name"] for o in metadata.get("outputs", [])]
        parts: dict[str, list[NDArray[Any]]] = {n: [] for n in names}
        for start in range(0, probe_set.count, size):
            budget.spend(target.address)
            request = []
            for name, datatype, array in feed:
                item = triton_http.InferInput(name, list(array[start : start + size].shape), datatype)
                item.set_data_from_numpy(array[start : start + size], binary_data=True)
                request.append(item)
            wanted = [triton_http.InferRequestedOutput(n, binary_data=True) for n in names]
            try:
                result = client.infer(target.model, request, outputs=wanted, headers=target.headers())
            except InferenceServerException as exc:
                last = min(start + size, probe_set.count) - 1
                raise RefusedError(
                    f"{target.role} {target.address} failed probes {start}..{last}: {exc}"
                ) from exc
            except Exception as exc:
                raise UnreachableError(f"cannot reach {target.role} {target.address}: {exc!r}") from exc
            for n in names:
                parts[n].append(_plain(result.as_numpy(n)))
        return {n: np.concatenate(p) for n, p in parts.items()}
    finally:
        client.close()


def _plain(array: NDArray[Any]) -> NDArray[Any]:
    if array.dtype == object:
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        return np.array(texts).reshape(array.shape)
    return array
