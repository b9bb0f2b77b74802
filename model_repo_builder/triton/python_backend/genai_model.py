"""The streaming Triton model of a generative LLM: an onnxruntime-genai export in Triton's python backend.

Copied into a text-generation repository as ``<model>/1/model.py`` (`triton.generation`) with its three
siblings, llmsched.py (the scheduler), llmbatch.py (the batched decoder) and llmmetrics.py (the
metrics); the exported onnxruntime-genai folder sits beside them in ``1/genai``. It runs inside Triton's
python stub without the builder's package, so it imports only the standard library, numpy,
onnxruntime(-genai) and Triton's utils; onnxruntime-genai gives the tokenizer and the chat template.

The model is decoupled: execute() parses each request and hands it to the scheduler, which runs every
sequence on one thread, one decoder run per iteration for all of them (continuous batching: requests
join and leave between iterations), so requests are served together and tokens go back as they are
made. The tensor names follow Triton's vLLM backend, so Triton's ``generate`` /
``generate_stream`` endpoints and gRPC streaming work unchanged: ``text_input`` (a prompt) or
``messages`` (a JSON chat, rendered with the checkpoint's own chat template), optional ``stream``,
``sampling_parameters`` (JSON: max_tokens, temperature, top_p, top_k, seed, stop) and
``exclude_input_in_output``. Responses carry ``text_output`` pieces; the last one also ``finish_reason``
(stop, length), ``prompt_tokens`` and ``completion_tokens``. A bad request gets an INVALID_ARG error
naming the field; a full queue an UNAVAILABLE error starting "queue full" with a retry time (the OpenAI
gateway answers it 429 with Retry-After); the model keeps serving.

Limits come from the pod's environment (the operator sets them from spec.serving.generation):
CONCH_LLM_MAX_SEQUENCES, CONCH_LLM_MAX_TOKENS_IN_FLIGHT and CONCH_LLM_MAX_QUEUE; the decoder's threads
from CONCH_LLM_THREADS (the container's CPU limit), else every CPU the process may run on.
"""

from __future__ import annotations

import json
import os
from typing import Any

import llmbatch  # type: ignore[import-not-found]  # next to this file in the version folder
import llmmetrics  # type: ignore[import-not-found]
import llmsched  # type: ignore[import-not-found]
import numpy as np
import onnxruntime_genai as og
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

ROLES = ("system", "user", "assistant", "tool")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")
FINALIZE_WAIT_S = 5.0
PROBE_PARAMETER = "conch_probe"
"""A request parameter marking a readiness check: one token, served ahead of the queue."""
PROBE_MAX_PROMPT = 64


class RequestError(ValueError):
    """The client's mistake: answered with INVALID_ARG, never raised out of the model."""


class TritonSink:
    """A request's answer through its Triton response sender (llmsched.Sink)."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender

    def piece(self, text: str) -> None:
        self.sender.send(_response(text))

    def finish(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> None:
        if reason == "cancelled":
            self.sender.send(flags=FINAL)  # nobody reads it: only close the stream
            return
        self.sender.send(_response(text, reason, prompt_tokens, completion_tokens), flags=FINAL)

    def fail(self, message: str, code: Any = None) -> None:
        """The request's error response (Triton's INTERNAL unless `code` says otherwise), final."""
        error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
        self.sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)

    def cancelled(self) -> bool:
        return bool(self.sender.is_cancelled())  # the client went away (gRPC stream closed)


class TritonPythonModel:
    """Triton's entry point: loads the model once, serves each request on its own thread."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.max_tokens_default = int(params["max_tokens_default"])
        folder = os.path.join(args["model_repository"], args["model_version"], "genai")
        self.limits = llmsched.Limits.from_env(dict(os.environ))
        # onnxruntime-genai for the tokenizer and the chat template; llmbatch runs the model, batched
        self.tokenizer = og.Tokenizer(og.Model(folder))
        decoder = llmbatch.BatchDecoder(
            folder, self.limits.decoder_threads(), self.limits.max_sequences, self.context_length
        )
        metrics = llmmetrics.LlmMetrics(args["model_name"], args["model_version"])
        self.scheduler = llmsched.Scheduler(decoder, self.tokenizer, self.limits, metrics)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sink = TritonSink(request.get_response_sender())
            try:
                self.scheduler.submit(self._parse(request), sink)
            except RequestError as exc:
                sink.fail(str(exc), pb_utils.TritonError.INVALID_ARG)
            except llmsched.QueueFullError as exc:
                sink.fail(str(exc), pb_utils.TritonError.UNAVAILABLE)

    def finalize(self) -> None:
        """Finish running generations within a few seconds; waiting ones are refused."""
        self.scheduler.close(FINALIZE_WAIT_S)

    def _parse(self, request: Any) -> Any:
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
        probe = bool(_parameters(request).get(PROBE_PARAMETER))
        if probe and len(ids) > PROBE_MAX_PROMPT:
            raise RequestError(f"a {PROBE_PARAMETER} request takes at most {PROBE_MAX_PROMPT} prompt tokens")
        if probe:
            max_tokens = 1  # a readiness check skips the queue, so it may make no more than that
        elif len(ids) + max_tokens > self.limits.max_tokens_in_flight:
            raise RequestError(
                f"the prompt's {len(ids)} tokens and sampling_parameters.max_tokens {max_tokens} "
                f"are over the model's KV-cache budget of {self.limits.max_tokens_in_flight} tokens"
            )
        job = llmsched.Job(
            prompt=prompt,
            ids=ids,
            stream=_bool(request, "stream", False),
            include_input=not _bool(request, "exclude_input_in_output", True),
            max_tokens=max_tokens,
            probe=probe,
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


def _parameters(request: Any) -> dict[str, Any]:
    """The request's own parameters (Triton's request-level `parameters`), {} when it has none."""
    try:
        values = json.loads(request.parameters() or "{}")
    except (AttributeError, json.JSONDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


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


def _apply_sampling(job: Any, sampling: dict[str, Any]) -> None:
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
