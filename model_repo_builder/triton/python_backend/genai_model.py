"""The streaming Triton model of a generative LLM: onnxruntime-genai in Triton's python backend.

Copied into a text-generation repository as ``<model>/1/model.py`` (`triton.generation`); the exported
onnxruntime-genai folder sits beside it in ``1/genai``. It runs inside Triton's python stub without the
builder's package, so it imports only the standard library, numpy, onnxruntime_genai and Triton's utils.

The model is decoupled: each request gets its own response sender and its own thread with its own
onnxruntime-genai generator, so requests are served at the same time, and tokens go back as they are
made. The tensor names follow Triton's vLLM backend, so Triton's ``generate`` / ``generate_stream``
endpoints and gRPC streaming work unchanged: ``text_input`` (a prompt) or ``messages`` (a JSON chat,
rendered with the checkpoint's own chat template), optional ``stream``, ``sampling_parameters`` (JSON:
max_tokens, temperature, top_p, top_k, seed, stop) and ``exclude_input_in_output``. Responses carry
``text_output`` pieces; the last one also ``finish_reason`` (stop, length), ``prompt_tokens`` and
``completion_tokens``. A bad request gets an INVALID_ARG error naming the field; the model keeps serving.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime_genai as og
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

ROLES = ("system", "user", "assistant", "tool")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")
FINALIZE_WAIT_S = 5.0


class RequestError(ValueError):
    """The client's mistake: answered with INVALID_ARG, never raised out of the model."""


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


class TritonPythonModel:
    """Triton's entry point: loads the model once, serves each request on its own thread."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.max_tokens_default = int(params["max_tokens_default"])
        folder = os.path.join(args["model_repository"], args["model_version"], "genai")
        self.model = og.Model(folder)
        self.tokenizer = og.Tokenizer(self.model)
        self.active: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            worker = threading.Thread(target=self._serve, args=(request, sender), daemon=True)
            with self.lock:
                self.active.add(worker)
            worker.start()

    def finalize(self) -> None:
        """Give running generations a few seconds to end (they are daemon threads: unloading never hangs)."""
        with self.lock:
            workers = list(self.active)
        deadline = time.monotonic() + FINALIZE_WAIT_S
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    def _serve(self, request: Any, sender: Any) -> None:
        try:
            job = self._parse(request)
            generate(self.model, self.tokenizer, job, sender)
        except RequestError as exc:
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        except Exception as exc:  # a failure of the model: an error for this request only
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {exc}")),
                flags=FINAL,
            )
        finally:
            with self.lock:
                self.active.discard(threading.current_thread())

    def _parse(self, request: Any) -> Job:
        prompt = self._prompt(request)
        ids = self.tokenizer.encode(prompt)
        if len(ids) >= self.context_length:
            raise RequestError(
                f"the prompt has {len(ids)} tokens; the context is {self.context_length} tokens "
                "(prompt and completion together)"
            )
        sampling = _sampling(_string(request, "sampling_parameters") or "{}")
        left = self.context_length - len(ids)
        max_tokens = sampling.get("max_tokens", min(self.max_tokens_default, left))
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or max_tokens < 1
            or max_tokens > left
        ):
            raise RequestError(
                f"sampling_parameters.max_tokens must be an integer from 1 to {left} "
                f"(the context left after the prompt's {len(ids)} tokens), got {max_tokens!r}"
            )
        job = Job(
            prompt=prompt,
            ids=ids,
            stream=_bool(request, "stream", False),
            include_input=not _bool(request, "exclude_input_in_output", True),
            max_tokens=max_tokens,
        )
        _apply_sampling(job, sampling)
        return job

    def _prompt(self, request: Any) -> str:
        text = _string(request, "text_input")
        messages = _string(request, "messages")
        if (text is None) == (messages is None):
            raise RequestError("give exactly one of text_input (a prompt) or messages (a chat)")
        if text is not None:
            if not text:
                raise RequestError("text_input is empty")
            return text
        assert messages is not None
        chat = _messages(messages)
        return str(self.tokenizer.apply_chat_template(json.dumps(chat), add_generation_prompt=True))


def generate(model: Any, tokenizer: Any, job: Job, sender: Any) -> None:
    """Run one generation, sending pieces as they are made (stream) or the whole text at the end."""
    params = og.GeneratorParams(model)
    options: dict[str, Any] = {"max_length": len(job.ids) + job.max_tokens, "do_sample": job.temperature > 0}
    if job.temperature > 0:
        options |= {"temperature": job.temperature, "top_p": job.top_p, "top_k": job.top_k}
        if job.seed is not None:
            options["random_seed"] = job.seed
    params.set_search_options(**options)
    generator = og.Generator(model, params)
    generator.append_tokens(job.ids)
    decoder = tokenizer.create_stream()
    # a whole answer may start with the prompt; stop strings are looked for after it
    text = job.prompt if job.include_input and not job.stream else ""
    completion_start, sent, tokens, finish = len(text), 0, 0, "length"
    hold = max((len(s) for s in job.stop), default=1) - 1  # a piece that may start a stop string waits
    cancelled = getattr(sender, "is_cancelled", lambda: False)  # the client went away (gRPC stream closed)
    while not generator.is_done() and tokens < job.max_tokens:
        if cancelled():
            sender.send(flags=FINAL)  # stop at once: nobody reads the rest, and its memory is freed
            return
        generator.generate_next_token()
        tokens += 1
        text += decoder.decode(int(generator.get_next_tokens()[0]))
        cut = _stop_at(text, job.stop, completion_start)
        if cut is not None:
            text, finish = text[:cut], "stop"
            break
        if job.stream and len(text) - hold > sent:
            sender.send(_response(text[sent : len(text) - hold]))
            sent = len(text) - hold
    else:
        if generator.is_done() and tokens < job.max_tokens:
            finish = "stop"  # the model ended it (an end-of-sequence token)
    piece = text[sent:] if job.stream else text
    sender.send(_response(piece, finish, len(job.ids), tokens), flags=FINAL)


def _stop_at(text: str, stops: list[str], start: int) -> int | None:
    """Where the first stop string begins in the completion part of text, or None."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _response(piece: str, finish: str | None = None, prompt_tokens: int = 0, completion: int = 0) -> Any:
    outputs = [pb_utils.Tensor("text_output", np.array([piece.encode("utf-8")], dtype=np.object_))]
    if finish is not None:
        outputs += [
            pb_utils.Tensor("finish_reason", np.array([finish.encode()], dtype=np.object_)),
            pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
            pb_utils.Tensor("completion_tokens", np.array([completion], dtype=np.int32)),
        ]
    return pb_utils.InferenceResponse(output_tensors=outputs)


def _string(request: Any, name: str) -> str | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise RequestError(f"{name} holds {values.size} items; send one per request")
    value = values[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{name} is not valid UTF-8 (byte {exc.start})") from exc
    return str(value)


def _bool(request: Any, name: str, default: bool) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return bool(tensor.as_numpy().reshape(-1)[0])


def _messages(text: str) -> list[dict[str, str]]:
    try:
        chat = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"messages is not JSON ({exc.msg})") from exc
    if not isinstance(chat, list) or not chat:
        raise RequestError("messages must be a non-empty list of {role, content}")
    for index, message in enumerate(chat):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RequestError(f"messages[{index}] must be an object with a string content")
        if message.get("role") not in ROLES:
            raise RequestError(
                f"messages[{index}].role {message.get('role')!r} is not one of {', '.join(ROLES)}"
            )
    return chat


def _sampling(text: str) -> dict[str, Any]:
    try:
        sampling = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"sampling_parameters is not JSON ({exc.msg})") from exc
    if not isinstance(sampling, dict):
        raise RequestError("sampling_parameters must be a JSON object")
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise RequestError(
            f"sampling_parameters.{unknown[0]} is not supported (use {', '.join(SAMPLING_KEYS)})"
        )
    return sampling


def _apply_sampling(job: Job, sampling: dict[str, Any]) -> None:
    temperature = sampling.get("temperature", 0.0)
    if not _number(temperature) or temperature < 0:
        raise RequestError(f"sampling_parameters.temperature must be a number >= 0, got {temperature!r}")
    top_p = sampling.get("top_p", 1.0)
    if not _number(top_p) or not 0 < top_p <= 1:
        raise RequestError(f"sampling_parameters.top_p must be in (0, 1], got {top_p!r}")
    top_k = sampling.get("top_k", 0)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise RequestError(f"sampling_parameters.top_k must be an integer >= 0, got {top_k!r}")
    seed = sampling.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(f"sampling_parameters.seed must be an integer, got {seed!r}")
    stop = sampling.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("sampling_parameters.stop must be a string or a list of non-empty strings")
    job.temperature, job.top_p, job.top_k, job.seed, job.stop = (
        float(temperature),
        float(top_p),
        top_k,
        seed,
        stop,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
