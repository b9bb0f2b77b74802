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
from .checkfiles import check_checkpoint_files

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
        return _from_directory(source, text)
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
    config = module.config
    where = f"{path.name}: config"
    arch = _check_architecture(list(config.architectures or [type(module).__name__]), where)
    own = _check_served(tokenizer, config.to_dict(), text, path.name, where)
    setattr(module, "hf_quantizer", None)  # noqa: B010 - dequantized already: save_pretrained writes fp32
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    hf_dir = work / "dequantized"
    module.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    return _loaded(module, tokenizer, text, hf_dir, arch, own, path.name)


def _from_directory(path: Path, text: Text) -> CausalModel:
    """Every check runs before the weights load: a refused checkpoint costs no load."""
    import torch
    import transformers

    config = _read_config(path)
    where = f"{path.name}/config.json"
    arch = _check_architecture(config.get("architectures") or [], where)
    check_checkpoint_files(path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise BadInput(f"{path.name}/tokenizer.json: cannot load the tokenizer: {_first_line(exc)}") from exc
    own = _check_served(tokenizer, config, text, path.name, where)
    try:
        module = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise BadInput(f"{path.name}: cannot load the weights: {_first_line(exc)}") from exc
    return _loaded(module, tokenizer, text, path, arch, own, None)


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BadInput(f"{path.name}/config.json: missing (not a Hugging Face model directory)")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path.name}/config.json: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise BadInput(f"{path.name}/config.json: not a JSON object")
    return config


def _check_architecture(architectures: list[str], where: str) -> str:
    """The architecture, when the export supports it (`where`: the file or object the config came from)."""
    arch = architectures[0] if architectures else ""
    if arch not in SUPPORTED_ARCHITECTURES:
        raise BadInput(
            f"{where}: architectures {architectures or '(none)'} is not a supported causal LM "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return arch


def _check_served(tokenizer: Any, config: dict[str, Any], text: Text, name: str, where: str) -> int:
    """What serving relies on, for either source: a chat template and a context length within the
    model's own; returns the model's own context length (`name`: the source, for the messages)."""
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            f"{name}: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)"
        )
    value = config.get("max_position_embeddings")
    own = int(value) if isinstance(value, int) else 0
    if own <= 0:
        raise BadInput(f"{where}: max_position_embeddings is missing: the context length is unknown")
    wanted = text.context_length
    if wanted is not None and wanted > own:
        raise BadInput(
            f"text.contextLength {wanted} is over the model's own context length {own} "
            f"({where}: max_position_embeddings)"
        )
    return own


def _loaded(  # noqa: PLR0917
    module: Any, tokenizer: Any, text: Text, hf_dir: Path, arch: str, own: int, gguf: str | None
) -> CausalModel:
    module.eval()
    return CausalModel(
        hf_dir=hf_dir,
        module=module,
        tokenizer=tokenizer,
        architecture=arch,
        model_type=str(module.config.model_type),
        context_length=text.context_length or own,
        model_context=own,
        parameters=sum(p.numel() for p in module.parameters()),
        dequantized_from=gguf,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
