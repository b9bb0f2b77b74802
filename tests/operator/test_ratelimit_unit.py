"""The operator's client-side rate limit (kube.TokenBucket), on a fake clock."""

from __future__ import annotations

import pytest

from conch import kube

pytestmark = pytest.mark.unit


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_goes_at_once_then_requests_wait_their_turn_at_qps() -> None:
    t = FakeTime()
    bucket = kube.TokenBucket(qps=10, burst=3, clock=t.clock, sleep=t.sleep)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.1)
    assert t.now == pytest.approx(0.2)  # 5 requests: 3 at once, then one per 1/qps


def test_idle_time_refills_up_to_the_burst_only() -> None:
    t = FakeTime()
    bucket = kube.TokenBucket(qps=10, burst=2, clock=t.clock, sleep=t.sleep)
    bucket.take(), bucket.take()
    t.now += 60.0  # a long idle minute refills 2 tokens, not 600
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)


def test_concurrent_takers_queue_behind_each_others_reservations() -> None:
    t = FakeTime()
    bucket = kube.TokenBucket(qps=4, burst=1, clock=t.clock, sleep=t.slept.append)
    waits = [bucket.take() for _ in range(4)]  # the clock stands still: four threads arriving together
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 5), (10, 0)])
def test_nonsense_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps must be > 0"):
        kube.TokenBucket(qps, burst)


def test_the_flags_parse_with_defaults_and_are_checked() -> None:
    from conch import main

    args = main.parse(["--kube-api-qps", "25", "--kube-api-burst", "50"])
    assert (args.kube_api_qps, args.kube_api_burst) == (25, 50)
    assert main.parse([]).kube_api_qps == 100 and main.parse([]).kube_api_burst == 200
    for bad in (["--kube-api-qps", "0"], ["--kube-api-burst", "0"]):
        with pytest.raises(SystemExit, match="--kube-api-qps must be > 0"):
            main.check(main.parse(bad))
    main.check(main.parse([]))
