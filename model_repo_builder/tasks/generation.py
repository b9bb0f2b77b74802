"""The text-generation task: a causal LM in, a streaming Triton model (onnxruntime-genai) out.

Steps, each timed: load (a Hugging Face directory, or a .gguf file dequantized to one: `sources.causal`)
-> data (held-out passages and chat prompts: `data.prompts`) -> reference (the original fp32 model's
perplexity and greedy continuations in `transformers`) -> the precision ladder: export (onnxruntime-
genai's builder at int4-weight, int8-weight or fp32: `export.genai`) and gate (perplexity ratio and
greedy agreement: `gate.generation`) per rung, the first that passes is published -> publish (the
decoupled python-backend model with the exported folder: `triton.generation`, build.json, and the probe
set a canary analysis replays: the chat prompts as rendered text and the original's greedy answers).
Pruning and distillation do not apply to generative models yet; a recipe asking for them is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import tasknames
from ..compression import ladder
from ..data import prompts
from ..errors import BadInput
from ..export import genai
from ..gate import generation as gengate
from ..gate import probes
from ..recipe import Gate, QuantizeMode, Recipe
from ..request import BuildRequest, BuildResult, Steps
from ..sources import causal
from ..sources.fetch import FetchedSource
from ..store import record as build_record
from ..store import repository
from ..triton import generation as triton_generation

MAX_TOKENS_DEFAULT = 256
"""max_tokens of a request that does not set it (capped by the context left after the prompt)."""


class TextGeneration:
    """Registry entry of `tasknames.TEXT_GENERATION`."""

    name = tasknames.TEXT_GENERATION

    def fresh(
        self, req: BuildRequest, src: FetchedSource, key: str, final: Path, *, work: Path, steps: Steps
    ) -> BuildResult:
        """Build and publish a generative model's repository (the gate must pass first)."""
        recipe = req.recipe
        assert recipe.text is not None
        _check_recipe(recipe)
        with steps.step("load"):
            model = causal.load(src.path, recipe.text, work)
        with steps.step("data"):
            data = prompts.gate_data(recipe.validation)
            tokens = gengate.tokenize(model.tokenizer, data)
        eos = _eos_ids(model)
        with steps.step("reference"):
            reference = gengate.reference(model.module, eos, tokens)

        def make(mode: QuantizeMode) -> Path:
            out = work / f"genai.{mode}"
            return genai.export(
                model.hf_dir, out, mode, block_size=recipe.quantize.block_size, cache=work / "genai-cache"
            )

        def judge(folder: Path) -> dict[str, float]:
            return gengate.measure(folder, eos, tokens, reference)

        gate = gengate.effective_gate(recipe.gate)
        published = ladder.climb(recipe.ladder(), make, judge, gate, steps)
        with steps.step("publish"), repository.staging(req.store, key) as tmp:
            triton_generation.write_generation_model(
                tmp,
                req.model_name,
                published.artifact,
                context_length=model.context_length,
                max_tokens_default=min(MAX_TOKENS_DEFAULT, model.context_length // 2),
                instances=recipe.triton.instance_count,
            )
            record = build_record.make_record(
                req,
                src,
                key,
                published.artifact,
                published.metrics,
                steps.timings,
                size_before=model.fp32_bytes(),
                size_after=genai.weight_bytes(published.artifact),
            )
            record |= _generation_record(model, recipe, data, published, gate)
            record["probes"] = probes.write(tmp, _probes(req.model_name, model, data, reference))
            record = repository.write_build_json(tmp, record)
            won = repository.publish(tmp, final)
        return BuildResult(key, final, record if won else repository.read_build_json(final), cached=not won)


def _check_recipe(recipe: Recipe) -> None:
    """What a generative build cannot do yet, refused naming the recipe field."""
    if recipe.prune.method != "none" and recipe.prune.amount > 0:
        raise BadInput(
            f"prune does not apply to {tasknames.TEXT_GENERATION} models yet (set prune.method none)"
        )
    if recipe.distill is not None:
        raise BadInput(f"distill does not apply to {tasknames.TEXT_GENERATION} models yet (remove distill)")


def _probes(
    name: str, model: causal.CausalModel, data: prompts.GateData, reference: gengate.Reference
) -> probes.ProbeSet:
    """The gate's chat prompts rendered as the served model sees a raw prompt, and the original's
    greedy answers decoded (what `analyze` compares a canary's and the stable's answers by)."""
    tokenizer = model.tokenizer
    rendered = [
        str(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
        for chat in data.prompts
    ]
    answers = [str(tokenizer.decode(ids, skip_special_tokens=True)) for ids in reference.greedy]
    return probes.generation_probes(name, rendered, answers, f"gate chat prompts ({data.origin})")


def _eos_ids(model: causal.CausalModel) -> set[int]:
    """The token ids that end a generation: the tokenizer's eos and the generation config's."""
    ids: set[int] = set()
    for value in (
        model.tokenizer.eos_token_id,
        getattr(model.module.generation_config, "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    if not ids:
        raise BadInput(f"{model.hf_dir.name}: the tokenizer has no eos_token: a generation could never stop")
    return ids


def _generation_record(
    model: causal.CausalModel,
    recipe: Recipe,
    data: prompts.GateData,
    published: ladder.Published,
    gate: Gate,
) -> dict[str, Any]:
    """build.json's generation entries: the model, the served limits, the ladder and the gate bounds."""
    assert recipe.text is not None
    return {
        "text": {
            "task": recipe.text.task,
            "modelType": model.model_type,
            "architecture": model.architecture,
            "parameters": model.parameters,
            "contextLength": model.context_length,
            "modelContextLength": model.model_context,
            "dequantizedFrom": model.dequantized_from,
            "validationData": data.describe(),
        },
        "quantize": published.record(recipe.ladder()),
        "gateBounds": {
            "maxPerplexityRatio": gate.max_perplexity_ratio,
            "minGreedyAgreement": gate.min_greedy_agreement,
        },
        "passes": [
            *([{"name": "dequantize", "from": model.dequantized_from}] if model.dequantized_from else []),
            {
                "name": "export",
                "format": "onnxruntime-genai",
                "precision": genai.GENAI_PRECISION[published.mode],
            },
        ],
    }


TASK = TextGeneration()
