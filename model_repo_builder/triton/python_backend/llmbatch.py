"""The generative model's decoder: one onnxruntime run advances every running sequence by one token.

Copied beside genai_model.py into a text-generation repository's version folder; it imports only numpy,
onnxruntime and the standard library. onnxruntime-genai's Generator holds one request's batch from its
first token to its last, and its continuous-batching Engine needs PagedAttention, which ONNX Runtime
implements for CUDA only. So the scheduler (llmsched) runs the exported model itself, as the Generator
does (same graph, same greedy tokens), with a KV cache that has a row per running sequence:
- a new sequence takes the next free row, and its prompt is read alone into it (the prefill);
- each step feeds every running row its last token at once. The graph's GroupQueryAttention reads each
  row's own length from the attention mask and writes the new keys and values in place (the Generator's
  past_present_share_buffer), so rows of any lengths run together;
- a finished row is refilled by the last row (a copy of its used length), so the running rows stay
  one contiguous block, which is what the graph takes.
A step over 4 rows of the int4 SmolLM2 took 10.5 ms on two threads against 4.9 ms for a step of one row
(measured), with every row's greedy tokens equal to its Generator's alone.

The cache is allocated for every row at the full context length but is zero pages until written, so a
pod's resident memory grows with the tokens it holds (what llmsched's MemoryGuard reads), not with it.
Sampling (temperature, top_k, top_p, seed) is numpy's, on each row's last logits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort


@dataclass
class Slot:
    """One sequence's row of the cache: its length, its last logits and its random generator."""

    row: int
    length: int
    logits: Any  # numpy float32 [vocabulary]: the distribution of its next token
    rng: Any
    token: int | None = None  # the token sampled from `logits`, the next step's input

    def sample(self, temperature: float, top_p: float, top_k: int) -> int:
        """The next token: greedy at temperature 0, else drawn from the filtered distribution."""
        if temperature <= 0:
            self.token = int(np.argmax(self.logits))
            return self.token
        scores = self.logits.astype(np.float64) / temperature
        if 0 < top_k < scores.size:
            scores[scores < np.partition(scores, -top_k)[-top_k]] = -np.inf
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if top_p < 1.0:
            order = np.argsort(-probs)
            before = np.cumsum(probs[order]) - probs[order]  # the mass ranked above each token
            probs[order[before >= top_p]] = 0.0
            probs /= probs.sum()
        self.token = int(self.rng.choice(probs.size, p=probs))
        return self.token


@dataclass
class Shape:
    """What the exported model's genai_config.json says about its decoder."""

    layers: int
    kv_heads: int
    head_size: int
    eos: frozenset[int]
    file: str
    names: dict[str, str]  # input_ids, attention_mask, logits and the cache's four name patterns

    @classmethod
    def read(cls, folder: str) -> Shape:
        with open(os.path.join(folder, "genai_config.json")) as f:
            model = json.load(f)["model"]
        decoder, eos = model["decoder"], model["eos_token_id"]
        return cls(
            layers=decoder["num_hidden_layers"],
            kv_heads=decoder["num_key_value_heads"],
            head_size=decoder["head_size"],
            eos=frozenset(eos if isinstance(eos, list) else [eos]),
            file=decoder["filename"],
            names={**decoder["inputs"], **decoder["outputs"]},
        )


class BatchDecoder:
    """The model's session and its KV cache of `rows` rows of `max_length` tokens; one thread uses it."""

    def __init__(self, folder: str, threads: int, rows: int, max_length: int) -> None:
        self.shape = Shape.read(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        path = os.path.join(folder, self.shape.file)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        (logits,) = [o for o in self.session.get_outputs() if o.name == self.shape.names["logits"]]
        self.vocabulary = int(logits.shape[-1])
        self.max_length = max_length
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.slots: list[Slot] = []  # the running rows, slots[i].row == i
        self._grow(max(1, rows))

    def prefill(self, ids: Any, seed: int | None) -> Slot:
        """Read a prompt into a free row: its slot, holding the logits of the first token to make."""
        if len(self.slots) == len(self.keys[0]):
            self._grow(2 * len(self.slots))  # only readiness probes ride over the running limit
        tokens = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        if tokens.shape[1] >= self.max_length:
            raise ValueError(f"a prompt of {tokens.shape[1]} tokens leaves no room in {self.max_length}")
        slot = Slot(len(self.slots), tokens.shape[1], None, np.random.default_rng(seed))
        logits = self._run(slot.row, slot.row + 1, tokens, [slot.length])
        slot.logits = logits[0, -1]
        self.slots.append(slot)
        return slot

    def step(self) -> None:
        """Feed every running row the token its sequence sampled last; each gets its next logits."""
        if not self.slots:
            return
        tokens = np.array([[slot.token] for slot in self.slots], dtype=np.int64)
        lengths = [slot.length + 1 for slot in self.slots]
        if max(lengths) > self.max_length:
            raise ValueError(f"a sequence is over the context of {self.max_length} tokens")
        logits = self._run(0, len(self.slots), tokens, lengths)
        for slot, row in zip(self.slots, logits, strict=True):
            slot.length, slot.logits, slot.token = slot.length + 1, row[-1], None

    def free(self, slot: Slot) -> None:
        """Give a finished sequence's row back: the last running row moves into it."""
        if slot not in self.slots:
            return
        last = self.slots.pop()
        if last is not slot:
            used = last.length
            for cache in (*self.keys, *self.values):
                cache[slot.row, :, :used] = cache[last.row, :, :used]
            last.row = slot.row
            self.slots[slot.row] = last

    def _grow(self, rows: int) -> None:
        shape = (rows, self.shape.kv_heads, self.max_length, self.shape.head_size)
        old = (self.keys, self.values)
        self.keys = [np.zeros(shape, np.float32) for _ in range(self.shape.layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(self.shape.layers)]
        if not old[0]:
            return  # the first allocation: nothing to keep
        used = max((slot.length for slot in self.slots), default=0)
        for new, before in zip((*self.keys, *self.values), (*old[0], *old[1]), strict=True):
            new[: len(self.slots), :, :used] = before[: len(self.slots), :, :used]

    def _run(self, first: int, end: int, tokens: Any, lengths: list[int]) -> Any:
        """One run over rows [first, end): their new tokens in, their logits out; the cache in place."""
        mask = np.zeros((end - first, max(lengths)), np.int64)
        for i, length in enumerate(lengths):
            mask[i, :length] = 1
        binding, names = self.session.io_binding(), self.shape.names
        binding.bind_cpu_input(names["input_ids"], tokens)
        binding.bind_cpu_input(names["attention_mask"], mask)
        for layer in range(self.shape.layers):
            for past, present, cache in (
                (names["past_key_names"], names["present_key_names"], self.keys[layer]),
                (names["past_value_names"], names["present_value_names"], self.values[layer]),
            ):
                rows = cache[first:end]  # contiguous: the first axis; read and written in place
                binding.bind_input(past % layer, "cpu", 0, np.float32, list(rows.shape), rows.ctypes.data)
                binding.bind_output(present % layer, "cpu", 0, np.float32, list(rows.shape), rows.ctypes.data)
        logits = np.empty((end - first, tokens.shape[1], self.vocabulary), np.float32)
        binding.bind_output(names["logits"], "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        return logits
