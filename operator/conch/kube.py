"""A small JSON client over the kubernetes package's transport: raw paths, dicts in and out.

The operator talks to a handful of resources by REST path and works on plain dicts (what the
renderers produce), so it uses the generated client only for configuration, auth and TLS. Every
request carries the operator's User-Agent (conch-operator/<version>), which is how the apiserver's
audit log tells its writes apart from everyone else's.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import kubernetes
import urllib3

import conch
from conch import errors, kinds, metrics, retry

Obj = dict[str, Any]

# (apiVersion, kind) -> plural of every kind the operator touches (conch.kinds lists them).
PLURALS: dict[tuple[str, str], str] = {(k.api_version, k.kind): k.plural for k in kinds.ALL}
DISCOVERY_TTL = 300.0  # an optional API (ServiceMonitors) appearing is noticed within this


def path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced resource collection, or of one object when `name` is given."""
    return kinds.of(api_version, kind).path(namespace, name)


def path_of(obj: Obj) -> str:
    """The REST path of an object from its apiVersion, kind and metadata."""
    meta = obj["metadata"]
    return path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


class TokenBucket:
    """Client-side rate limit, as client-go's token bucket (rest.Config QPS and Burst): up to `burst`
    requests at once, refilled at `qps` per second; a request over the limit waits its turn. It keeps
    a burst of new ModelDeployments from flooding the apiserver with the operator's writes (the
    apiserver's priority and fairness is the server-side guard)."""

    def __init__(
        self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1 (got {qps}, {burst})")
        self.qps, self.burst, self.clock, self.sleep = qps, burst, clock, sleep
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token, waiting until it is there; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps) - 1
            self._at = now
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait:
            self.sleep(wait)  # the token is reserved: others queue behind it
        return wait


class Kube:
    """JSON requests against one apiserver."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.api.user_agent = conch.USER_AGENT
        self._served: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        # Leader election (conch.leader): consulted before every write; None = always allowed.
        self.may_write: Callable[[], bool] | None = None
        self.timeout = 30.0  # seconds per request
        self.limiter: TokenBucket | None = None  # client-side QPS/burst (main.py's --kube-api-qps)
        self.backoff = retry.Backoff()  # retries through 429/5xx/dropped connections (conch.retry)
        self.sleep: Callable[[float], None] = time.sleep  # between retries (tests inject fakes)
        self.jitter: Callable[[], float] = random.random

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster config when running in a pod, else $KUBECONFIG / ~/.kube/config."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"),  # read now: the package reads it once, at import
                client_configuration=configuration,
            )
        configuration.retries = False  # no silent urllib3 retries: request() owns the retry policy
        return cls(kubernetes.client.ApiClient(configuration))

    def request(
        self, method: str, url: str, body: Obj | None = None, query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj | None:  # fmt: skip
        """Send one request; None on 404, the decoded JSON otherwise; KubeError on failure.

        429, 5xx and dropped connections are retried (idempotent requests only) per `self.backoff`
        (conch.retry); when the retries run out, errors.ApiUnavailableError."""
        if query:
            url = f"{url}?{urlencode(query)}"
        retryable = retry.idempotent(method, content_type)
        waited = 0.0
        for attempt in itertools.count():
            failure = self._attempt(method, url, body, content_type)
            if not isinstance(failure, errors.ApiUnavailableError):
                return failure
            pause = self.backoff.delay(attempt, failure.retry_after, self.jitter)
            out_of_tries = attempt + 1 >= self.backoff.attempts or waited + pause > self.backoff.budget
            if not retryable or out_of_tries:
                raise failure
            metrics.CLIENT_RETRIES.labels(str(failure.status or "connection")).inc()
            self.sleep(pause)
            waited += pause
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, method: str, url: str, body: Obj | None, content_type: str
    ) -> Obj | errors.ApiUnavailableError | None:
        """One send: the decoded answer, or the ApiUnavailableError to retry; raises what is not retried."""
        if method != "GET" and self.may_write is not None and not self.may_write():
            raise errors.NotLeaderError(f"{method} {url}: not the leader (the Lease is not held or renewed)")
        if self.limiter is not None and (waited := self.limiter.take()):
            metrics.CLIENT_THROTTLED.inc(waited)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, full_url, headers_, body_, _ = self.api.param_serialize(
            method, url, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self.api.call_api(
                method_, full_url, header_params=headers_, body=body_, _request_timeout=self.timeout
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, reset, timed out, TLS cut
            return errors.ApiUnavailableError(f"{method} {url}: {type(exc).__name__}: {exc}"[:500])
        status = response.status
        if status in retry.RETRYABLE_STATUS:
            after = retry.parse_retry_after(response.headers.get("Retry-After"))
            return errors.ApiUnavailableError(f"{method} {url}: HTTP {status}: {data[:300]!r}", status, after)
        if status == 404:
            return None
        if status == 409:
            raise errors.ConflictError(f"{method} {url}: conflict", 409)
        if status >= 300:
            raise errors.KubeError(f"{method} {url}: HTTP {status}: {data[:500]!r}", status)
        decoded: Obj = json.loads(data) if data else {}
        return decoded

    def get(self, url: str) -> Obj | None:
        """GET one object (None when absent)."""
        return self.request("GET", url)

    def read(self, url: str) -> Obj | None:
        """GET one object from the apiserver itself, whatever a subclass caches."""
        return self.request("GET", url)

    def list(self, url: str, label_selector: str | None = None) -> list[Obj]:
        """LIST a collection, optionally by label selector."""
        query = {"labelSelector": label_selector} if label_selector else None
        got = self.request("GET", url, query=query) or {}
        items: list[Obj] = got.get("items", [])
        return items

    def apply(self, url: str, obj: Obj, field_manager: str = conch.FIELD_MANAGER) -> Obj:
        """Server-side apply `obj` at `url` with a fixed field manager, taking ownership on conflict."""
        query = {"fieldManager": field_manager, "force": "true"}
        got = self.request("PATCH", url, body=obj, query=query, content_type="application/apply-patch+yaml")
        if got is None:
            raise errors.KubeError(f"apply {url}: not found (namespace gone?)", 404)
        return got

    def create(self, url: str, obj: Obj) -> Obj | None:
        """POST a new object (used for Events only; children are applied)."""
        return self.request("POST", url, body=obj)

    def delete(self, url: str) -> None:
        """DELETE an object, letting the garbage collector remove what it owns in the background."""
        self.request("DELETE", url, body={"propagationPolicy": "Background"})

    def served(self, group_version: str) -> bool:
        """Whether the apiserver serves this group/version (cached for a minute)."""
        with self._lock:
            cached = self._served.get(group_version)
            if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL:
                return cached[1]
        found = self.request("GET", f"/apis/{group_version}") is not None
        with self._lock:
            self._served[group_version] = (time.monotonic(), found)
        return found
