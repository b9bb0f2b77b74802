"""Held-out text and chat prompts for a generative model's gate.

The gate measures perplexity on passages and greedy agreement on chat prompts. Passages come from
``validation.dataPath`` (a .txt with one passage per line, or a .jsonl with ``text``) when given, else
from built-in varied English passages (the text models' validation sentences, joined four at a time
into short paragraphs). Prompts are built in: varied questions and instructions as single-turn chats.
Nothing here is used to calibrate or train, so the gate never judges a model on what shaped it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import Validation
from . import texts

SENTENCES_PER_PASSAGE = 4

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "List three tips for staying focused while working from home.",
    "What is the difference between a virus and a bacterium?",
    "Translate 'Good morning, how are you?' into Spanish.",
    "Give me a short recipe for pancakes.",
    "Who wrote Romeo and Juliet?",
    "Summarise the water cycle for a ten-year-old.",
    "What does a Kubernetes Deployment do?",
    "Suggest a name for a friendly robot.",
    "How many legs does a spider have?",
)


@dataclass
class GateData:
    """Passages for perplexity and chat prompts for greedy agreement, with where they came from."""

    passages: list[str]
    prompts: list[list[dict[str, str]]]
    origin: str

    def describe(self) -> str:
        """For build.json: what the gate measured on."""
        return f"{self.origin} ({len(self.passages)} passages, {len(self.prompts)} chat prompts)"


def gate_data(validation: Validation) -> GateData:
    """The recipe's held-out passages (or the built-in ones) and the built-in chat prompts."""
    if validation.data_path:
        loaded = texts.load_texts(validation.data_path, validation.samples, None, "validation.dataPath")
        passages, origin = loaded.texts, loaded.origin
    else:
        sentences = texts.VALIDATION_SENTENCES
        passages = [
            " ".join(sentences[i : i + SENTENCES_PER_PASSAGE])
            for i in range(0, len(sentences), SENTENCES_PER_PASSAGE)
        ][: validation.samples]
        origin = "built-in passages"
    prompts = [[{"role": "user", "content": p}] for p in CHAT_PROMPTS[: validation.samples]]
    return GateData(passages, prompts, origin)
