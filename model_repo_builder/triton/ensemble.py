"""The Triton ensemble that serves a text model: tokenizer -> tensor model -> post-processing.

A repository for a text model holds four Triton models, all built from Triton's protobuf
ModelConfig: ``<name>`` (the ensemble clients call: ``text`` BYTES in, ``embedding`` or
``label`` + ``score`` out), ``<name>_tokenizer`` and ``<name>_post`` (python backend, CPU) and
``<name>_model``, the compressed tensor model (input_ids/attention_mask in), which stays
addressable on its own. Every step batches with the same maxBatchSize.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from .. import textkind
from ..model import TensorInfo
from ..recipe import Recipe
from . import python_backend
from .config import render, triton_dtype
from .python_backend.textproc import TokenizerSettings

TOKENIZER_SUFFIX = "_tokenizer"
MODEL_SUFFIX = "_model"
POST_SUFFIX = "_post"
TEXT_INPUT = "text"


def tensor_model_name(name: str) -> str:
    """Name of the compressed tensor model inside a text repository."""
    return name + MODEL_SUFFIX


def _dtype(spec: TensorInfo) -> int:
    return int(mc.TYPE_STRING) if spec.dtype == "object" else triton_dtype(spec.dtype)


def _python_step(
    name: str, recipe: Recipe, inputs: list[TensorInfo], outputs: list[TensorInfo], params: dict[str, str]
) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=recipe.triton.max_batch_size)
    for spec in inputs:
        cfg.input.add(name=spec.name, data_type=_dtype(spec), dims=list(spec.shape))
    for spec in outputs:
        cfg.output.add(name=spec.name, data_type=_dtype(spec), dims=list(spec.shape))
    cfg.dynamic_batching.max_queue_delay_microseconds = (
        recipe.triton.dynamic_batching.max_queue_delay_microseconds
    )
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=recipe.triton.instance_count)
    for key, value in params.items():
        cfg.parameters[key].string_value = value
    return cfg


def ensemble_config(
    name: str, recipe: Recipe, model_output: TensorInfo, outputs: list[TensorInfo]
) -> mc.ModelConfig:
    """The ensemble clients call."""
    cfg = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=recipe.triton.max_batch_size)
    cfg.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    for spec in outputs:
        cfg.output.add(name=spec.name, data_type=_dtype(spec), dims=list(spec.shape))
    steps = cfg.ensemble_scheduling.step
    tok = steps.add(model_name=name + TOKENIZER_SUFFIX, model_version=-1)
    tok.input_map[TEXT_INPUT] = TEXT_INPUT
    tok.output_map["input_ids"] = "input_ids"
    tok.output_map["attention_mask"] = "attention_mask"
    model = steps.add(model_name=tensor_model_name(name), model_version=-1)
    model.input_map["input_ids"] = "input_ids"
    model.input_map["attention_mask"] = "attention_mask"
    model.output_map[model_output.name] = model_output.name
    post = steps.add(model_name=name + POST_SUFFIX, model_version=-1)
    post.input_map[_post_input(model_output)] = model_output.name
    if model_output.name == "last_hidden_state":
        post.input_map["attention_mask"] = "attention_mask"
    for spec in outputs:
        post.output_map[spec.name] = spec.name
    return cfg


def _post_input(model_output: TensorInfo) -> str:
    return "token_states" if model_output.name == "last_hidden_state" else "logits"


def write_steps(  # noqa: PLR0917
    tmp: Path,
    name: str,
    recipe: Recipe,
    tokenizer_json: Path,
    settings: TokenizerSettings,
    model_output: TensorInfo,
    labels: list[str] | None,
    task: textkind.TextTask,
) -> list[TensorInfo]:
    """Write the ensemble, tokenizer and post-processing models; returns the ensemble's outputs."""
    assert recipe.text is not None
    text = recipe.text
    outputs = task.outputs(model_output)
    token_specs = [TensorInfo("input_ids", "int64", [-1]), TensorInfo("attention_mask", "int64", [-1])]
    tokenizer = _python_step(
        name + TOKENIZER_SUFFIX,
        recipe,
        [TensorInfo(TEXT_INPUT, "object", [1])],
        token_specs,
        settings.parameters(),
    )
    _write(
        tmp, tokenizer, {"model.py": python_backend.TOKENIZER_PY, "textproc.py": python_backend.TEXTPROC_PY}
    )
    shutil.copyfile(tokenizer_json, tmp / tokenizer.name / "1" / "tokenizer.json")
    post_inputs = [TensorInfo(_post_input(model_output), "float32", list(model_output.shape))]
    extra_inputs, extra_params = task.post_step(text, token_specs[1])
    post_inputs += extra_inputs
    params: dict[str, str] = {"task": task.name} | extra_params
    post = _python_step(name + POST_SUFFIX, recipe, post_inputs, outputs, params)
    _write(tmp, post, {"model.py": python_backend.POST_PY, "textproc.py": python_backend.TEXTPROC_PY})
    if labels is not None:
        (tmp / post.name / "1" / "labels.json").write_text(json.dumps(labels) + "\n", encoding="utf-8")
    _write(tmp, ensemble_config(name, recipe, model_output, outputs), {})
    return outputs


def _write(tmp: Path, cfg: mc.ModelConfig, files: dict[str, Path]) -> None:
    version = tmp / cfg.name / "1"
    version.mkdir(parents=True)
    for dest, src in files.items():
        shutil.copyfile(src, version / dest)
    (tmp / cfg.name / "config.pbtxt").write_text(render(cfg), encoding="utf-8")
