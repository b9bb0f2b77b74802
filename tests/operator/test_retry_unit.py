"""The operator's client through an apiserver storm (conch.retry, kube.Kube.request): a real HTTP
server on 127.0.0.1 answers each request from a script (429 with Retry-After, 500, 503, a dropped
connection, then 200), and the test reads the waits the client chose (its sleep is a recorder) and
the requests the server saw."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import kubernetes
import pytest

from conch import errors, kube, retry, workqueue

pytestmark = pytest.mark.unit
OK = (200, {}, b'{"kind":"ConfigMap","metadata":{"name":"x"}}')
DROP = (0, {}, b"")  # close the connection without an answer


def status(code: int, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return (code, headers, b'{"kind":"Status","code":%d}' % code)


class Script(http.server.ThreadingHTTPServer):
    """Answers requests with the scripted responses in order (the last one repeats)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: list[tuple[int, dict[str, str], bytes]] = [OK]
        self.seen: list[str] = []


class Handler(http.server.BaseHTTPRequestHandler):
    server: Script

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append(f"{self.command} {self.headers.get('User-Agent', '')}")
        answers = self.server.answers
        code, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        if code == 0:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(code)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Script]:
    srv = Script()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server: Script) -> tuple[kube.Kube, list[float]]:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = False
    k = kube.Kube(kubernetes.client.ApiClient(configuration))
    slept: list[float] = []
    k.sleep, k.jitter, k.timeout = slept.append, lambda: 0.5, 5.0
    return k, slept


URL = "/api/v1/namespaces/a/configmaps/x"


def test_a_get_waits_what_retry_after_says_then_backs_off_with_jitter_and_succeeds(
    server: Script, client: tuple[kube.Kube, list[float]]
) -> None:
    k, slept = client
    server.answers = [status(429, "3"), status(500), status(503), DROP, OK]
    assert k.get(URL) == {"kind": "ConfigMap", "metadata": {"name": "x"}}
    # 3 s as asked; then half (the jitter draw) of 0.25 x 2^1, 2^2, 2^3
    assert slept == [3.0, 0.25, 0.5, 1.0]
    assert len(server.seen) == 5 and all(s.startswith("GET conch-operator/") for s in server.seen)


def test_retries_stop_at_the_attempt_limit_with_a_typed_error(
    server: Script, client: tuple[kube.Kube, list[float]]
) -> None:
    k, slept = client
    server.answers = [status(503, "1")]
    with pytest.raises(errors.ApiUnavailableError) as caught:
        k.get(URL)
    assert (caught.value.status, caught.value.retry_after) == (503, 1.0)
    assert len(server.seen) == k.backoff.attempts == 5 and slept == [1.0] * 4


def test_a_retry_after_beyond_the_budget_fails_at_once_and_the_queue_waits_it_out(
    server: Script, client: tuple[kube.Kube, list[float]]
) -> None:
    k, slept = client
    server.answers = [status(429, "3600")]
    with pytest.raises(errors.ApiUnavailableError) as caught:
        k.get(URL)
    assert len(server.seen) == 1 and slept == []  # 30 s (the cap) > the 15 s budget: no retry here
    assert caught.value.retry_after == 3600.0
    assert workqueue.retry_delay(caught.value, 1) == workqueue.MAX_BACKOFF
    server.answers = [status(429, "7")]
    with pytest.raises(errors.ApiUnavailableError) as again:
        k.get(URL)
    assert workqueue.retry_delay(again.value, 1) == 7.0  # later than the 1 s backoff: the server's word
    assert workqueue.retry_delay(errors.KubeError("x", 500), 1) == 1.0


def test_the_budget_bounds_the_total_wait(server: Script, client: tuple[kube.Kube, list[float]]) -> None:
    k, slept = client
    server.answers = [status(429, "6")]
    with pytest.raises(errors.ApiUnavailableError):
        k.get(URL)
    assert slept == [6.0, 6.0] and len(server.seen) == 3  # a third wait would pass 15 s


def test_server_side_apply_and_delete_are_retried(
    server: Script, client: tuple[kube.Kube, list[float]]
) -> None:
    k, slept = client
    server.answers = [status(503), DROP, OK]
    k.apply(URL, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    server.answers = [status(500), OK]
    k.delete(URL)
    assert [s.split()[0] for s in server.seen] == ["PATCH"] * 3 + ["DELETE"] * 2
    assert len(slept) == 3


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_post_or_put_is_sent_once(
    server: Script, client: tuple[kube.Kube, list[float]], method: str
) -> None:
    k, slept = client
    server.answers = [status(503, "1"), OK]
    with pytest.raises(errors.ApiUnavailableError):
        k.request(method, "/api/v1/namespaces/a/events", body={"kind": "Event"})
    assert len(server.seen) == 1 and slept == []


def test_other_errors_are_not_retried(server: Script, client: tuple[kube.Kube, list[float]]) -> None:
    k, slept = client
    server.answers = [status(403), OK]
    with pytest.raises(errors.KubeError) as caught:
        k.get(URL)
    assert not isinstance(caught.value, errors.ApiUnavailableError) and caught.value.status == 403
    server.answers = [status(409)]
    with pytest.raises(errors.ConflictError):
        k.apply(URL, {"kind": "ConfigMap"})
    assert len(server.seen) == 2 and slept == []


def test_a_refused_connection_is_retried_then_typed() -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = False
    k = kube.Kube(kubernetes.client.ApiClient(configuration))
    slept: list[float] = []
    k.sleep, k.jitter = slept.append, lambda: 1.0
    with pytest.raises(errors.ApiUnavailableError) as caught:
        k.get(URL)
    assert caught.value.status is None and slept == [0.25, 0.5, 1.0, 2.0]


def test_backoff_is_full_jitter_under_a_cap() -> None:
    b = retry.Backoff()
    assert [b.delay(n, None, lambda: 1.0) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay(3, None, lambda: 0.0) == 0.0
    assert b.delay(0, 120.0) == 30.0  # Retry-After capped
    values = ("2", " 1.5 ", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", None)
    assert [retry.parse_retry_after(v) for v in values] == [2.0, 1.5, None, None, None]
    assert retry.idempotent("PATCH", retry.APPLY_PATCH) and not retry.idempotent(
        "PATCH", "application/merge-patch+json"
    )
