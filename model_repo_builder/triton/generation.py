"""The Triton model of a generative LLM: a decoupled python-backend model running onnxruntime-genai.

The repository holds one model named after the ModelDeployment's model: config.pbtxt (built from
Triton's protobuf, `config`), ``1/model.py`` (`python_backend/genai_model.py`) with its scheduler and
metrics modules beside it, and ``1/genai/`` (the exported onnxruntime-genai folder). The tensor names
follow Triton's vLLM backend, so Triton's own ``generate`` and ``generate_stream`` endpoints and gRPC
streaming work with it unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from . import config, python_backend

GENAI_DIR = "genai"
_STRING, _BOOL, _INT32 = mc.TYPE_STRING, mc.TYPE_BOOL, mc.TYPE_INT32
INPUTS: tuple[tuple[str, int, bool], ...] = (
    # (name, data type, optional)
    ("text_input", _STRING, True),
    ("messages", _STRING, True),
    ("stream", _BOOL, True),
    ("sampling_parameters", _STRING, True),
    ("exclude_input_in_output", _BOOL, True),
)
OUTPUTS: tuple[tuple[str, int], ...] = (
    ("text_output", _STRING),
    ("finish_reason", _STRING),
    ("prompt_tokens", _INT32),
    ("completion_tokens", _INT32),
)


def generation_config(
    model_name: str, *, context_length: int, max_tokens_default: int, instances: int = 1
) -> mc.ModelConfig:
    """The decoupled model's ModelConfig (one request per call: max_batch_size 0)."""
    cfg = mc.ModelConfig(name=model_name, backend="python", max_batch_size=0)
    cfg.model_transaction_policy.decoupled = True
    for name, dtype, optional in INPUTS:
        cfg.input.add(name=name, data_type=dtype, dims=[1], optional=optional)
    for name, dtype in OUTPUTS:
        cfg.output.add(name=name, data_type=dtype, dims=[-1])
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    cfg.parameters["context_length"].string_value = str(context_length)
    cfg.parameters["max_tokens_default"].string_value = str(max_tokens_default)
    return cfg


def write_generation_model(
    repo: Path,
    model_name: str,
    genai_dir: Path,
    *,
    context_length: int,
    max_tokens_default: int,
    instances: int = 1,
) -> None:
    """Lay out `repo/model_name`: config.pbtxt, 1/model.py and 1/genai/ (a copy of `genai_dir`)."""
    model_dir = repo / model_name
    version = model_dir / "1"
    version.mkdir(parents=True)
    cfg = generation_config(
        model_name, context_length=context_length, max_tokens_default=max_tokens_default, instances=instances
    )
    (model_dir / "config.pbtxt").write_text(config.render(cfg))
    shutil.copyfile(python_backend.GENAI_PY, version / "model.py")
    for sibling in python_backend.GENAI_SIBLINGS:
        shutil.copyfile(sibling, version / sibling.name)
    shutil.copytree(genai_dir, version / GENAI_DIR)
