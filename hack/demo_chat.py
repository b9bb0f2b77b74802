"""The demo's chat with SmolLM2 (examples/cpu-smollm2.yaml): one question streamed token by token over
Triton's own generate_stream endpoint (server-sent events), the same question through the `openai`
client on the pod's OpenAI-compatible port, and the gate's numbers from the build report.

Traffic goes only to the pod's own 127.65.x.y address.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import openai

QUESTION = "What is the capital of France? Answer in one sentence."
SAMPLING = {"max_tokens": 48, "temperature": 0}


def _stream_over_triton(ip: str, model: str, messages: list[dict[str, str]], token: str) -> str:
    """Triton's generate_stream: each SSE event carries the next piece of text; printed as it comes."""
    body = {"messages": json.dumps(messages), "sampling_parameters": json.dumps(SAMPLING), "stream": True}
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/models/{model}/generate_stream",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    pieces: list[str] = []
    started, first = time.monotonic(), None
    print("  ", end="", flush=True)
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if not line.startswith(b"data:"):
                continue
            event = json.loads(line[5:])
            piece = str(event.get("text_output", ""))
            first = first or time.monotonic()
            pieces.append(piece)
            print(piece, end="", flush=True)
    elapsed = time.monotonic() - started
    print(
        f"\n   ({len(pieces)} events, first after {(first or started) - started:.2f}s, all in {elapsed:.2f}s)"
    )
    return "".join(pieces)


def chat(ip: str, model: str, build: dict[str, Any], token: str) -> None:
    """The streamed answer, the openai client's answer (both with the model's bearer token), and the
    gate that let this build serve."""
    messages = [{"role": "user", "content": QUESTION}]
    print(f"\n  user: {QUESTION}")
    print(f"  streamed over http://{ip}:8000/v2/models/{model}/generate_stream:")
    streamed = _stream_over_triton(ip, model, messages, token)
    client = openai.OpenAI(base_url=f"http://{ip}:9000/v1", api_key=token, max_retries=0, timeout=120)
    answer = client.chat.completions.create(model=model, messages=messages, **SAMPLING)  # type: ignore[arg-type]
    text = answer.choices[0].message.content or ""
    usage = answer.usage
    print(f"  the openai client, base_url http://{ip}:9000/v1 (chat.completions.create):")
    print(f"   {text}")
    if usage is not None:
        print(f"   (usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens)")
    print(f"  same answer both ways: {streamed == text}")
    gate = build.get("gate", {})
    print(
        f"  gate: perplexity ratio {gate.get('perplexityRatio')} (built {gate.get('perplexity')} vs original "
        f"{gate.get('perplexityOriginal')}), greedy agreement {gate.get('greedyAgreement')} over "
        f"{gate.get('prompts')} prompts x {gate.get('greedyTokens')} tokens"
    )
