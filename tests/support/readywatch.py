"""How many pods were Ready at every moment, from a watch: every change the apiserver made, not samples.

A test that polls "Ready pods >= 1" every second can miss a gap shorter than its period; a watch sees
each pod update in order. `ReadyPods` lists the pods once (the starting state), then watches from that
list's resourceVersion and, after every event, records how many matching pods are Ready and not being
deleted. The watching thread never asserts (an assert there would only end the thread): it keeps what
went wrong, and `counts()` raises it in the test's own thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes

WATCH_SECONDS = 5  # each watch request's server-side timeout; the loop resumes from the last version


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


class ReadyPods:
    """`with ReadyPods(kubeconfig, namespace, selector) as watch: ...; watch.counts()`."""

    def __init__(self, kubeconfig: Path, namespace: str, selector: str) -> None:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace, self.selector = namespace, selector
        self._ready: dict[str, bool] = {}
        self._counts: list[int] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._version = ""

    def __enter__(self) -> ReadyPods:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        for pod in listed.items:
            self._ready[pod.metadata.name] = _ready(pod)
        self._record()
        self._version = listed.metadata.resource_version
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(WATCH_SECONDS + 10)

    def counts(self) -> list[int]:
        """The Ready count after the list and after every event so far; raises what the watch hit."""
        if self._error is not None:
            raise AssertionError(f"the pod watch failed: {self._error!r}") from self._error
        return list(self._counts)

    def _record(self) -> None:
        self._counts.append(sum(self._ready.values()))

    def _run(self) -> None:
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        try:
            while not self._stop.is_set():
                for event in watch.stream(
                    self.core.list_namespaced_pod, self.namespace, label_selector=self.selector,
                    resource_version=self._version, timeout_seconds=WATCH_SECONDS,
                ):  # fmt: skip
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self._ready.pop(pod.metadata.name, None)
                    else:
                        self._ready[pod.metadata.name] = _ready(pod)
                    self._version = pod.metadata.resource_version
                    self._record()
                    if self._stop.is_set():
                        watch.stop()  # type: ignore[no-untyped-call]
        except BaseException as exc:  # kept for counts(): a 410 or a dropped watch must fail the test
            self._error = exc
