"""The operator's domain errors. The work queue retries them with backoff; nothing else translates them."""

from __future__ import annotations


class ConchError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpecError(ConchError):
    """The spec cannot be acted on (the CRD schema should have caught it); waits for a spec change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field


class OwnershipConflictError(ConchError):
    """A child's name is taken by an object this ModelDeployment does not control: never taken over."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url  # the REST path of the taken name


class BadSummaryError(ConchError):
    """The builder's termination message is not a valid summary."""


class KubeError(ConchError):
    """An API call failed; retried with backoff."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiUnavailableError(KubeError):
    """The apiserver kept refusing (429, 5xx) or dropping a request through every retry the client
    allows; `retry_after` is the server's last Retry-After (seconds), the earliest the work queue
    runs the pass again. `status` is None for a dropped or refused connection."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class NotLeaderError(ConchError):
    """This replica does not hold the leader Lease (or could not renew it in time): it must not write."""


class ConflictError(KubeError):
    """Someone else changed the object between our read and write; retry at once."""
