"""The generative model's scheduler (llmsched) in-process on the real onnxruntime-genai model (SmolLM2,
the fp32 export the serving tests use): sequences of different lengths stepped together give exactly
their one-at-a-time greedy tokens; a request joins a running batch and streams before the others end;
cancelling frees the slot for the next in the queue within one iteration; a full queue refuses at once
with a retry time; the measurements (TTFT, token gaps, finish reasons, load) follow what happened."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnxruntime_genai as og
import pytest

from model_repo_builder.triton.python_backend import llmbatch, llmsched

pytestmark = pytest.mark.serving
WAIT_S = 120.0
CONTEXT = 2048
PROMPTS = (
    "Write a haiku about the sea.",
    "Name three colours of the rainbow.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
)


class Recorder:
    """A request's answer as the scheduler sends it, with when each part came."""

    def __init__(self) -> None:
        self.pieces: list[tuple[float, str]] = []
        self.final: tuple[str, str, int, int] | None = None
        self.finished_at = 0.0
        self.error: str | None = None
        self.cancel = threading.Event()
        self.done = threading.Event()

    def piece(self, text: str) -> None:
        self.pieces.append((time.monotonic(), text))

    def finish(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.final = (text, reason, prompt_tokens, completion_tokens)
        self.finished_at = time.monotonic()
        self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self.done.set()

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def text(self) -> str:
        assert self.final is not None, self.error
        return "".join(p for _, p in self.pieces) + self.final[0]

    def wait(self) -> None:
        assert self.done.wait(WAIT_S), "no answer in time"


class Tally:
    """The scheduler's measurements, kept (llmsched.Observer)."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        self.finishes: list[tuple[str, int, int]] = []
        self.rejected = 0
        self.loads: list[tuple[int, int, int, int]] = []

    def first_token(self, seconds: float) -> None:
        self.ttft.append(seconds)

    def token_gap(self, seconds: float) -> None:
        self.gaps.append(seconds)

    def finished(self, reason: str, prompt_tokens: int, tokens: int, seconds: float, queued: float) -> None:
        self.finishes.append((reason, prompt_tokens, tokens))

    def rejected_request(self) -> None:
        self.rejected += 1

    def load(self, running: int, waiting: int, kv_tokens: int, kv_budget: int) -> None:
        self.loads.append((running, waiting, kv_tokens, kv_budget))


@pytest.fixture(scope="module")
def genai(smollm2_repository: tuple[Path, Any]) -> tuple[str, Any]:
    """The exported model's folder and its tokenizer."""
    repo, _ = smollm2_repository
    folder = str(repo / "smol" / "1" / "genai")
    return folder, og.Tokenizer(og.Model(folder))


@pytest.fixture
def make(genai: tuple[str, Any]) -> Iterator[Any]:
    made: list[llmsched.Scheduler] = []

    def scheduler(limits: llmsched.Limits) -> tuple[llmsched.Scheduler, Tally]:
        tally = Tally()
        decoder = llmbatch.BatchDecoder(genai[0], limits.decoder_threads(), limits.max_sequences, CONTEXT)
        made.append(llmsched.Scheduler(decoder, genai[1], limits, tally))
        return made[-1], tally

    yield scheduler
    for each in made:
        each.close(5.0)


def _until(condition: Callable[[], bool]) -> None:
    """Poll a condition every 10 ms, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _job(genai: tuple[Any, Any], question: str, tokens: int) -> llmsched.Job:
    """A greedy streamed chat turn asking `question`, as genai_model.py makes one."""
    _, tokenizer = genai
    chat = json.dumps([{"role": "user", "content": question}])
    prompt = str(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
    return llmsched.Job(prompt=prompt, ids=tokenizer.encode(prompt), stream=True, include_input=False,
                        max_tokens=tokens)  # fmt: skip


def _alone(genai: tuple[Any, Any], make: Any, prompt: str, tokens: int) -> str:
    scheduler, _ = make(llmsched.Limits(max_sequences=1))
    out = Recorder()
    scheduler.submit(_job(genai, prompt, tokens), out)
    out.wait()
    return out.text()


def test_sequences_stepped_together_give_their_one_at_a_time_tokens(genai: Any, make: Any) -> None:
    lengths = (8, 24, 16, 32)
    alone = [_alone(genai, make, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    scheduler, tally = make(llmsched.Limits(max_sequences=4))
    outs = [Recorder() for _ in PROMPTS]
    for prompt, tokens, out in zip(PROMPTS, lengths, outs, strict=True):
        scheduler.submit(_job(genai, prompt, tokens), out)
    for out in outs:
        out.wait()
    assert [out.text() for out in outs] == alone
    assert max(running for running, *_ in tally.loads) == 4  # they really ran together
    assert sorted(f[0] for f in tally.finishes) == sorted(o.final[1] for o in outs if o.final)
    assert len(tally.ttft) == 4 and len(tally.gaps) > 4


def test_a_request_joins_the_running_batch_and_streams_before_the_others_end(genai: Any, make: Any) -> None:
    scheduler, _ = make(llmsched.Limits(max_sequences=4))
    long = [Recorder() for _ in range(2)]
    for out in long:
        scheduler.submit(_job(genai, "Tell me a long story about a dragon.", 96), out)
    _until(lambda: all(out.pieces for out in long))  # both are generating
    late = Recorder()
    scheduler.submit(_job(genai, "What is two plus two?", 4), late)
    late.wait()
    assert late.pieces and not any(out.done.is_set() for out in long)
    assert late.pieces[0][0] < min(out.pieces[-1][0] for out in long)


def test_cancelling_frees_the_slot_for_the_next_request_within_one_iteration(genai: Any, make: Any) -> None:
    scheduler, tally = make(llmsched.Limits(max_sequences=1))
    first, second = Recorder(), Recorder()
    scheduler.submit(_job(genai, "Tell me a long story about a dragon.", 200), first)
    scheduler.submit(_job(genai, "What is two plus two?", 4), second)
    _until(lambda: len(first.pieces) >= 3)
    assert not second.pieces  # one slot: it waits
    gap_before = max(b[0] - a[0] for a, b in zip(first.pieces, first.pieces[1:], strict=False))
    cancelled_at = time.monotonic()
    first.cancel.set()
    second.wait()
    assert first.final is not None and first.final[1] == "cancelled"
    started = second.pieces[0][0] - cancelled_at
    print(f"cancel -> next first piece {started * 1000:.0f} ms; a step took <= {gap_before * 1000:.0f} ms")
    assert started < 3 * gap_before + 0.5  # the cancelled sequence's step, the prefill, the first token
    assert ("cancelled", first.final[2], first.final[3]) in tally.finishes


def test_a_full_queue_refuses_at_once_with_a_retry_time(genai: Any, make: Any) -> None:
    scheduler, tally = make(llmsched.Limits(max_sequences=1, max_queue=1))
    outs = [Recorder(), Recorder()]
    scheduler.submit(_job(genai, "Tell me a long story about a dragon.", 64), outs[0])
    _until(lambda: bool(outs[0].pieces))
    scheduler.submit(_job(genai, "What is two plus two?", 4), outs[1])  # waits: the queue holds one
    with pytest.raises(
        llmsched.QueueFullError, match=r"queue full: 1 requests waiting \(maxQueue 1\)"
    ) as caught:
        scheduler.submit(_job(genai, "Hello", 4), Recorder())
    assert 1 <= caught.value.retry_after <= 60 and tally.rejected == 1
    for out in outs:
        out.wait()
        assert out.final is not None and out.final[1] in ("stop", "length")


def test_a_pod_near_its_memory_limit_refuses_new_sequences_and_keeps_serving(genai: Any, make: Any) -> None:
    """The guard reads this process's real resident memory (and its parent's): a limit below it refuses
    at once with a retry time (HTTP 429 at the gateway); a limit well above it admits."""
    in_use = llmsched.memory_in_use()
    assert in_use > 100 * 2**20  # the model is loaded in this process
    tight, tally = make(llmsched.Limits(memory_limit_bytes=in_use))
    with pytest.raises(
        llmsched.QueueFullError, match=r"memory full: \d+ MiB in use of the pod's \d+ MiB"
    ) as caught:
        tight.submit(_job(genai, "Hello", 4), Recorder())
    assert 1 <= caught.value.retry_after <= 60 and tally.rejected == 1
    check = _job(genai, "Hello", 1)
    check.probe = True  # a readiness check is still answered: the pod is alive, only full
    probe = Recorder()
    tight.submit(check, probe)
    probe.wait()
    roomy, _ = make(llmsched.Limits(memory_limit_bytes=4 * in_use))
    out = Recorder()
    roomy.submit(_job(genai, "What is two plus two?", 4), out)
    out.wait()
    assert out.final is not None and out.final[1] in ("stop", "length")


def test_the_kv_budget_holds_a_request_until_reserved_tokens_are_freed(genai: Any, make: Any) -> None:
    first_job = _job(genai, "Tell me a long story about a dragon.", 48)
    scheduler, tally = make(llmsched.Limits(max_sequences=4, max_tokens_in_flight=first_job.reservation + 10))
    first, second = Recorder(), Recorder()
    scheduler.submit(first_job, first)
    scheduler.submit(_job(genai, "What is two plus two?", 8), second)
    second.wait()
    first.wait()
    assert second.pieces[0][0] > first.finished_at  # it started after the first freed its tokens
    assert max(running for running, *_ in tally.loads) == 1  # never both: the budget held the second back
    assert max(kv for _, _, kv, _ in tally.loads) <= first_job.reservation


def test_an_iteration_reads_at_most_its_prefill_budget_of_new_prompts(genai: Any, make: Any) -> None:
    """Three prompts of ~300 tokens arrive together: they are read one per iteration, not all in one
    (the running sequences would wait for all three prefills), and each still gets its answer."""
    _, tokenizer = genai
    prompt = "The quick brown fox jumps over the lazy dog. " * 30
    ids = tokenizer.encode(prompt)
    assert llmsched.PREFILL_TOKENS / 2 < len(ids) <= llmsched.PREFILL_TOKENS
    scheduler, tally = make(llmsched.Limits(max_sequences=4))
    outs = [Recorder() for _ in range(3)]
    with scheduler.wake:  # all three wait before the scheduler's next admission
        for out in outs:
            job = llmsched.Job(prompt=prompt, ids=ids, stream=True, include_input=False, max_tokens=4)
            scheduler.submit(job, out)
    for out in outs:
        out.wait()
    seen = [(running, waiting) for running, waiting, *_ in tally.loads]
    assert seen[:3] == [(1, 2), (2, 1), (3, 0)], seen
    assert len({out.text() for out in outs}) == 1  # the same prompt, the same greedy answer


def test_a_probe_is_served_at_once_while_every_slot_is_busy_and_the_queue_full(genai: Any, make: Any) -> None:
    scheduler, tally = make(llmsched.Limits(max_sequences=1, max_queue=1))
    busy, queued, probe = Recorder(), Recorder(), Recorder()
    scheduler.submit(_job(genai, "Tell me a long story about a dragon.", 200), busy)
    _until(lambda: bool(busy.pieces))
    scheduler.submit(_job(genai, "What is two plus two?", 4), queued)
    with pytest.raises(llmsched.QueueFullError):
        scheduler.submit(_job(genai, "Hello", 4), Recorder())
    check = _job(genai, "Hello", 1)
    check.probe = True
    scheduler.submit(check, probe)  # a readiness check: never refused, never behind the queue
    probe.wait()
    assert probe.final is not None and probe.final[3] == 1
    assert not queued.done.is_set() and not busy.done.is_set()
    # a readiness check is not traffic: its token is in no latency and its end in no request count
    assert len(tally.ttft) == 1 and tally.finishes == []
    busy.cancel.set()
    queued.wait()
