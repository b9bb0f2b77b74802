"""The Event recorder: what an Event says, and that a full queue drops instead of blocking a pass."""

from __future__ import annotations

import logging

import pytest

from conch import events, kube, status

pytestmark = pytest.mark.unit
MD = {
    "apiVersion": "serving.conch.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1"},
}


def test_an_event_names_its_model_and_keeps_the_time_it_was_recorded() -> None:
    body = events.body(MD, status.Event("Normal", "Serving", "now serving version v1" + "x" * 2000), "T0")
    assert body["involvedObject"] == {
        "apiVersion": MD["apiVersion"], "kind": "ModelDeployment",
        "name": "m", "namespace": "ns", "uid": "u-1",
    }  # fmt: skip
    assert body["metadata"] == {"generateName": "m.", "namespace": "ns"}
    assert (body["firstTimestamp"], body["lastTimestamp"], body["reason"]) == ("T0", "T0", "Serving")
    assert len(body["message"]) == 1024


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    recorder = events.Recorder(capacity=2, senders=0)  # nobody drains: the queue only fills
    client = kube.Kube.__new__(kube.Kube)  # never called: nothing is sent
    before = events.DROPPED._value.get()
    body = events.body(MD, status.Event("Normal", "Serving", "now serving"), "T0")
    assert [recorder.record(client, body) for _ in range(3)] == [True, True, False]
    assert events.DROPPED._value.get() == before + 1


def test_a_replica_that_stopped_leading_logs_its_event_instead_of_posting_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = kube.Kube.__new__(kube.Kube)
    client.may_write = lambda: False  # the write guard refuses before any request is made
    events.log.addHandler(caplog.handler)  # whatever another test did to the loggers' levels or propagation
    try:
        with caplog.at_level(logging.WARNING, logger=events.log.name):
            events.send(client, events.body(MD, status.Event("Normal", "Serving", "now serving"), "T0"))
    finally:
        events.log.removeHandler(caplog.handler)
    assert "could not post event Serving" in caplog.text and "not the leader" in caplog.text
