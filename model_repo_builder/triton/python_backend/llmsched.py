"""The generative model's scheduler: iteration-level (continuous) batching of the decoder's sequences.

Copied beside genai_model.py into a text-generation repository's version folder (Triton's python stub puts
that folder on sys.path); it imports only the standard library (the decoder and tokenizer come in), so
the operator reads its Limits and the builder's tests drive it in-process without Triton.

One thread owns every sequence. Each iteration it admits waiting requests while the limits allow (running
sequences, and the KV-cache budget: a sequence reserves its prompt plus max_tokens), samples the next token of
every running sequence and sends it, then advances them all by one decoder run over the whole batch
(llmbatch.BatchDecoder). So a new request joins at the next iteration and a finished or cancelled one leaves
at once, freeing its row and its reservation for the next in the queue. A full queue refuses at once
(QueueFullError, with a Retry-After estimate) instead of hanging, and so does a pod near its memory limit
(MemoryGuard: the resident memory of the stub and tritonserver above MEMORY_HIGH_WATER of
CONCH_LLM_MEMORY_LIMIT_BYTES, the container's limit the operator passes in): a sequence more would risk the
OOM killer, which would end every stream of the pod at once. The prompt of a new sequence is read in one run
of its own (its prefill): the other sequences wait for that run, which their inter-token latency shows, and an
iteration reads at most PREFILL_TOKENS of new prompts (or one longer prompt). It is not split into chunks
because the int4 decoder gives other greedy tokens for a prompt appended in chunks (measured), and batching
must change no token.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

FINISH_REASONS = ("stop", "length", "cancelled", "error")
REPORT_EVERY_S = 0.5
PREFILL_TOKENS = 512
"""Prompt tokens read in one iteration: the bound on how long new prompts hold up running sequences."""
ABORT_WAIT_S = 2.0


MEMORY_ENV = "CONCH_LLM_MEMORY_LIMIT_BYTES"
THREADS_ENV = "CONCH_LLM_THREADS"
"""The decoder's intra-op threads: the container's whole CPUs (its CPU limit), set by the operator."""
MEMORY_HIGH_WATER = 0.9
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

LIMIT_ENV = {
    "max_sequences": "CONCH_LLM_MAX_SEQUENCES",
    "max_tokens_in_flight": "CONCH_LLM_MAX_TOKENS_IN_FLIGHT",
    "max_queue": "CONCH_LLM_MAX_QUEUE",
}
"""The pod's environment variables the limits come from (the operator sets them)."""


@dataclass(frozen=True)
class Limits:
    """What one model instance takes on at once (spec.serving.generation; the defaults are the API's)."""

    max_sequences: int = 16
    max_tokens_in_flight: int = 16384
    max_queue: int = 64
    memory_limit_bytes: int = 0  # the container's memory limit; 0: none known, nothing refused for memory
    threads: int = 0  # the decoder's intra-op threads; 0: as many as the CPUs this process may run on

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> Limits:
        """The limits the environment sets, the defaults elsewhere."""
        limits = {name: int(environ[var]) for name, var in LIMIT_ENV.items() if var in environ}
        memory, threads = environ.get(MEMORY_ENV, ""), environ.get(THREADS_ENV, "")
        return cls(
            **limits,
            memory_limit_bytes=int(memory) if memory.isdigit() else 0,
            threads=int(threads) if threads.isdigit() else 0,
        )

    def decoder_threads(self) -> int:
        """The decoder's intra-op threads. onnxruntime-genai's own default is one, and a token of the
        int4 SmolLM2 took 7.7 ms on one thread, 4.9 ms on two, with the same greedy tokens (measured)."""
        return self.threads or max(1, len(os.sched_getaffinity(0)))


def memory_in_use() -> int:
    """Resident bytes of this process (Triton's python stub: the model and its KV caches) and of its
    parent (tritonserver), the container's two big processes. Not the cgroup's charge: under the test
    node agent a process's cgroup is the host's, whose charge is every process there."""
    return sum(_resident_bytes(pid) for pid in ("self", str(os.getppid())))


def _resident_bytes(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class MemoryGuard:
    """Whether a new sequence would push the pod past MEMORY_HIGH_WATER of its memory limit."""

    limit_bytes: int
    usage: Any = memory_in_use  # () -> bytes in use

    def refusal(self) -> str | None:
        """Why a new sequence is refused now, or None."""
        if self.limit_bytes <= 0:
            return None
        used = int(self.usage())
        if used <= MEMORY_HIGH_WATER * self.limit_bytes:
            return None
        return (
            f"{used / 2**20:.0f} MiB in use of the pod's {self.limit_bytes / 2**20:.0f} MiB memory limit "
            f"(over {MEMORY_HIGH_WATER:.0%})"
        )


@dataclass
class Job:
    """One parsed request: the prompt's token ids and how to generate from them."""

    prompt: str
    ids: Any  # numpy int32 token ids
    stream: bool
    include_input: bool
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    probe: bool = False  # a readiness check: one token, ahead of the queue and over maxSequences

    @property
    def reservation(self) -> int:
        """KV-cache tokens the sequence may hold: its prompt and every token it may make."""
        return len(self.ids) + self.max_tokens


class Sink(Protocol):
    """Where one request's answer goes (Triton's response sender, or a test's list)."""

    def piece(self, text: str) -> None: ...
    def finish(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> None: ...
    def fail(self, message: str) -> None: ...
    def cancelled(self) -> bool: ...


class Observer(Protocol):
    """The scheduler's measurements (Triton's custom metrics in the served model)."""

    def first_token(self, seconds: float) -> None: ...
    def token_gap(self, seconds: float) -> None: ...
    def finished(
        self, reason: str, prompt_tokens: int, tokens: int, seconds: float, queued: float
    ) -> None: ...
    def rejected_request(self) -> None: ...
    def load(self, running: int, waiting: int, kv_tokens: int, kv_budget: int) -> None: ...


class QueueFullError(Exception):
    """The queue holds max_queue requests: refuse now, with how long to wait before trying again."""

    def __init__(self, waiting: int, limit: int, retry_after: int, memory: str | None = None) -> None:
        queue = f"queue full: {waiting} requests waiting (maxQueue {limit})"
        why = f"memory full: {memory}" if memory else queue
        super().__init__(f"{why}; retry after {retry_after} s")
        self.retry_after = retry_after


class Sequence:
    """One request in the scheduler: its row of the cache once admitted, the text made so far, its timings."""

    def __init__(self, job: Job, sink: Sink) -> None:
        self.job, self.sink = job, sink
        self.arrived = time.monotonic()
        self.started = self.last = 0.0
        self.slot: Any = None  # its llmbatch.Slot: a row of the KV cache
        self.detokenizer: Any = None
        self.eos: frozenset[int] = frozenset()
        self.tokens = self.sent = 0
        # a whole answer may start with the prompt; stop strings are looked for after it
        self.text = job.prompt if job.include_input and not job.stream else ""
        self.completion_start = len(self.text)
        self.hold = max((len(s) for s in job.stop), default=1) - 1  # a piece that may start a stop string

    def start(self, decoder: Any, tokenizer: Any) -> None:
        """Take a row of the cache and read the prompt into it (the prefill)."""
        self.started = time.monotonic()
        self.slot = decoder.prefill(self.job.ids, self.job.seed)
        self.detokenizer = tokenizer.create_stream()
        self.eos = decoder.shape.eos

    def advance(self) -> str | None:
        """Sample one token and send what can be sent; the finish reason when the sequence is done."""
        job = self.job
        token = self.slot.sample(job.temperature, job.top_p, job.top_k)
        self.tokens += 1
        self.text += self.detokenizer.decode(token)
        found = [i for i in (self.text.find(s, self.completion_start) for s in job.stop) if i >= 0]
        if found:
            self.text = self.text[: min(found)]
            return "stop"
        if job.stream and len(self.text) - self.hold > self.sent:
            self.sink.piece(self.text[self.sent : len(self.text) - self.hold])
            self.sent = len(self.text) - self.hold
        if self.tokens >= job.max_tokens:
            return "length"
        return "stop" if token in self.eos else None  # the model ended it (an end-of-sequence token)

    def kv_tokens(self) -> int:
        return len(self.job.ids) + self.tokens if self.slot is not None else 0

    def release(self, decoder: Any) -> None:
        """Give its row of the cache back now."""
        if self.slot is not None:
            decoder.free(self.slot)
        self.slot = self.detokenizer = None


class Scheduler:
    """Admits, steps and retires sequences on one thread; submit() is safe from any thread."""

    def __init__(self, decoder: Any, tokenizer: Any, limits: Limits, observer: Observer) -> None:
        """`decoder` is an llmbatch.BatchDecoder, used on the scheduler's thread only."""
        self.decoder, self.tokenizer, self.limits, self.observer = decoder, tokenizer, limits, observer
        self.memory = MemoryGuard(limits.memory_limit_bytes)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.reserved = 0
        self.mean_seconds = 1.0  # a moving average of request time, for Retry-After
        self.closing = self.aborting = False
        self.reported = (0.0, -1, -1)  # when the load was last reported, and its running and waiting
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="llm-scheduler", daemon=True)
        self.thread.start()

    def submit(self, job: Job, sink: Sink) -> None:
        """Queue a request; QueueFullError when max_queue requests already wait."""
        with self.wake:
            if self.closing:
                raise QueueFullError(len(self.waiting), self.limits.max_queue, 1)
            if job.probe:  # a busy model is a live one: its readiness never waits behind the queue
                self.waiting.appendleft(Sequence(job, sink))
                self.wake.notify()
                return
            free = max(0, self.limits.max_sequences - len(self.running))
            memory = self.memory.refusal()
            if memory is not None or len(self.waiting) >= self.limits.max_queue + free:
                self.observer.rejected_request()
                retry = self._retry_after()
                raise QueueFullError(len(self.waiting), self.limits.max_queue, retry, memory)
            self.waiting.append(Sequence(job, sink))
            self.wake.notify()

    def close(self, grace_seconds: float) -> None:
        """Stop taking requests, fail the waiting ones and give running ones until the grace ends."""
        with self.wake:
            self.closing = True
            dropped = list(self.waiting)
            self.waiting.clear()
            self.wake.notify()
        for seq in dropped:
            seq.sink.fail("the model is being unloaded; the request was not started")
        self.thread.join(timeout=grace_seconds)
        if self.thread.is_alive():  # the grace is over: the running sequences end with an error
            self.aborting = True
            self.thread.join(timeout=ABORT_WAIT_S)

    def _retry_after(self) -> int:
        per_slot = self.mean_seconds * (len(self.waiting) + 1) / self.limits.max_sequences
        return max(1, min(60, math.ceil(per_slot)))

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.waiting and not self.running and not self.closing:
                    self.wake.wait()
                if self.closing and not self.running:
                    return
                admitted = self._admit()
            for seq in admitted:
                self._start(seq)
            for seq in list(self.running):
                if self.aborting:
                    self._retire(seq, "error", "the model was unloaded before the answer was finished")
                else:
                    self._step(seq)
            self._decode()
            self._report()

    def _admit(self) -> list[Sequence]:
        """Move waiting sequences to running while the limits allow (first come, first served), and
        while this iteration's prompts hold at most PREFILL_TOKENS (the first one whatever its size)."""
        admitted: list[Sequence] = []
        prompts = 0
        while self.waiting and (self.waiting[0].job.probe or len(self.running) < self.limits.max_sequences):
            need = self.waiting[0].job.reservation
            probe = self.waiting[0].job.probe
            if not probe and self.running and self.reserved + need > self.limits.max_tokens_in_flight:
                break
            prompts += len(self.waiting[0].job.ids)
            if not probe and admitted and prompts > PREFILL_TOKENS:
                break  # the running sequences wait for these prefills: bound that wait
            seq = self.waiting.popleft()
            self.running.append(seq)
            self.reserved += need
            admitted.append(seq)
        return admitted

    def _start(self, seq: Sequence) -> None:
        if seq.sink.cancelled():
            self._retire(seq, "cancelled")
            return
        try:
            seq.start(self.decoder, self.tokenizer)
        except Exception as exc:  # a failure of the model: this request only
            self._retire(seq, "error", f"generation failed: {exc}")
        seq.last = time.monotonic()

    def _step(self, seq: Sequence) -> None:
        if seq.sink.cancelled():
            self._retire(seq, "cancelled")  # nobody reads the rest: its memory is freed at once
            return
        try:
            reason = seq.advance()
        except Exception as exc:
            self._retire(seq, "error", f"generation failed: {exc}")
            return
        now = time.monotonic()
        traffic = not seq.job.probe  # a readiness check stays out of the latency metrics
        if traffic and seq.tokens == 1:
            self.observer.first_token(now - seq.arrived)
        elif traffic and seq.tokens > 1:
            self.observer.token_gap(now - seq.last)
        seq.last = now
        if reason is not None:
            self._retire(seq, reason)

    def _decode(self) -> None:
        """One decoder run for every running sequence: each gets the logits of its next token."""
        try:
            self.decoder.step()
        except Exception as exc:  # a failure of the model: every sequence of the batch
            for seq in list(self.running):
                self._retire(seq, "error", f"generation failed: {exc}")

    def _retire(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        if seq in self.running:
            self.running.remove(seq)
            with self.wake:
                self.reserved -= seq.job.reservation
        seq.release(self.decoder)
        seconds = time.monotonic() - seq.arrived
        queued = (seq.started or time.monotonic()) - seq.arrived
        if not seq.job.probe:  # nor in the request counts and the Retry-After estimate
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
            self.observer.finished(reason, len(seq.job.ids), seq.tokens, seconds, queued)
        if error is not None:
            seq.sink.fail(error)
        else:  # a cancelled one's sink sends no text: nobody reads it
            piece = seq.text[seq.sent :] if seq.job.stream else seq.text
            seq.sink.finish(piece, reason, len(seq.job.ids), seq.tokens)

    def _report(self) -> None:
        """The load gauges: when the counts change, else at most every REPORT_EVERY_S."""
        with self.wake:
            waiting = len(self.waiting)
        now, running = time.monotonic(), len(self.running)
        last, last_running, last_waiting = self.reported
        if (running, waiting) == (last_running, last_waiting) and now - last < REPORT_EVERY_S:
            return
        self.reported = (now, running, waiting)
        kv = sum(seq.kv_tokens() for seq in self.running)
        self.observer.load(running, waiting, kv, self.limits.max_tokens_in_flight)
