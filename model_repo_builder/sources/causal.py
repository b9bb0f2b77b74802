"""Causal language model sources: a Hugging Face directory, or a GGUF file dequantized into one.

A generative model's source is a checkpoint directory (config.json, weights, tokenizer, chat
template) or a single ``.gguf`` file (llama.cpp's format). `transformers` reads a GGUF file with
``gguf_file=`` and dequantizes it to an ordinary fp32 model; this module writes that model out as a
Hugging Face directory (the export's input), after dropping the GGUF quantization config that would
otherwise make ``save_pretrained`` refuse. Everything the later steps rely on is checked here, each
refusal one line naming the file and the field: an architecture the export supports, a tokenizer, a
chat template, and a context length within the model's own.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..recipe import Text

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Phi3ForCausalLM",
    "PhiForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "GraniteForCausalLM",
    "OlmoForCausalLM",
    "SmolLM3ForCausalLM",
)
"""Text-only decoders that onnxruntime-genai's model builder exports (the README lists them)."""
GGUF_SUFFIX = ".gguf"


@dataclass
class CausalModel:
    """A loaded causal LM: its fp32 module and tokenizer, and the directory the export reads."""

    hf_dir: Path
    module: Any  # transformers PreTrainedModel (fp32, eval mode)
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    architecture: str
    model_type: str
    context_length: int  # what is served: the recipe's text.contextLength or the model's own
    model_context: int  # the model's own (max_position_embeddings)
    parameters: int
    dequantized_from: str | None  # the GGUF file's name when the source was one

    def fp32_bytes(self) -> int:
        """Bytes of the fp32 weights written to hf_dir (the size the compressed model is measured by)."""
        return sum(p.stat().st_size for p in self.hf_dir.glob("*.safetensors"))


def load(source: Path, text: Text, work: Path) -> CausalModel:
    """Load `source` (a directory or a .gguf file) as a causal LM and check it can be built and served."""
    if source.is_file() and source.suffix.lower() == GGUF_SUFFIX:
        return _from_gguf(source, text, work)
    if source.is_dir():
        return _from_directory(source, text, source, None)
    raise BadInput(
        f"{source.name}: a text-generation source is a Hugging Face model directory, a .tar.gz of one, "
        "or a .gguf file"
    )


def _from_gguf(path: Path, text: Text, work: Path) -> CausalModel:
    import torch
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        module = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    except (ValueError, OSError, KeyError, RuntimeError, struct.error) as exc:
        raise BadInput(f"{path.name}: cannot read the GGUF file: {_first_line(exc)}") from exc
    setattr(module, "hf_quantizer", None)  # noqa: B010 - dequantized already: save_pretrained writes fp32
    if hasattr(module.config, "quantization_config"):
        del module.config.quantization_config
    hf_dir = work / "dequantized"
    module.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    return _checked(module, tokenizer, text, hf_dir, path.name, path.name)


def _from_directory(path: Path, text: Text, hf_dir: Path, gguf: str | None) -> CausalModel:
    import torch
    import transformers

    config = _check_config(path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise BadInput(f"{path.name}/tokenizer.json: cannot load the tokenizer: {_first_line(exc)}") from exc
    _check_chat_template(tokenizer, path.name)
    _check_context(text, _own_context(config), f"{path.name}/config.json")
    try:
        module = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise BadInput(f"{path.name}: cannot load the weights: {_first_line(exc)}") from exc
    return _checked(module, tokenizer, text, hf_dir, path.name, gguf)


def _check_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BadInput(f"{path.name}/config.json: missing (not a Hugging Face model directory)")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path.name}/config.json: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise BadInput(f"{path.name}/config.json: not a JSON object")
    _check_architecture(config.get("architectures") or [], f"{path.name}/config.json")
    return config


def _check_architecture(architectures: list[str], where: str) -> str:
    arch = architectures[0] if architectures else ""
    if arch not in SUPPORTED_ARCHITECTURES:
        raise BadInput(
            f"{where}: architectures {architectures or '(none)'} is not a supported causal LM "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return arch


def _checked(  # noqa: PLR0917
    module: Any, tokenizer: Any, text: Text, hf_dir: Path, name: str, gguf: str | None
) -> CausalModel:
    config = module.config
    arch = _check_architecture(list(config.architectures or [type(module).__name__]), f"{name}: config")
    _check_chat_template(tokenizer, name)
    own = _check_context(text, _own_context(config.to_dict()), f"{name}: config")
    wanted = text.context_length
    module.eval()
    return CausalModel(
        hf_dir=hf_dir,
        module=module,
        tokenizer=tokenizer,
        architecture=arch,
        model_type=str(config.model_type),
        context_length=wanted or own,
        model_context=own,
        parameters=sum(p.numel() for p in module.parameters()),
        dequantized_from=gguf,
    )


def _own_context(config: dict[str, Any]) -> int:
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else 0


def _check_context(text: Text, own: int, where: str) -> int:
    """The model's own context length; refuses a recipe asking for more."""
    if own <= 0:
        raise BadInput(f"{where}: max_position_embeddings is missing: the context length is unknown")
    wanted = text.context_length
    if wanted is not None and wanted > own:
        raise BadInput(
            f"text.contextLength {wanted} is over the model's own context length {own} "
            f"({where}: max_position_embeddings)"
        )
    return own


def _check_chat_template(tokenizer: Any, name: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            f"{name}: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
