"""Export a causal LM to an onnxruntime-genai model folder at one precision.

onnxruntime-genai's model builder writes the decoder as ONNX with a KV cache, its tokenizer and
chat template, and a genai_config.json that the runtime (and the served python-backend model) loads.
Weight-only quantization is the builder's own block-wise MatMulNBits path (round-to-nearest by
default): int4-weight and int8-weight; ``none`` keeps fp32. The builder runs as a subprocess: it is a
script with its own argument parsing, and a failed export must not leave its memory in the build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import BadInput
from ..recipe import QuantizeMode

GENAI_PRECISION: dict[str, str] = {"int4-weight": "int4", "int8-weight": "int8", "none": "fp32"}
"""Recipe quantize mode -> the builder's --precision."""
DEFAULT_BLOCK_SIZE = 32
CONFIG_FILE = "genai_config.json"
MAX_LOG_LINES = 12


def export(hf_dir: Path, out: Path, mode: QuantizeMode, *, block_size: int | None, cache: Path) -> Path:
    """Write the onnxruntime-genai folder of `hf_dir` at `mode` into `out` and return it."""
    precision = GENAI_PRECISION.get(mode)
    if precision is None:
        raise BadInput(
            f"quantize.mode {mode!r} does not apply to text-generation "
            f"(use one of: {', '.join(GENAI_PRECISION)})"
        )
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-m", str(hf_dir), "-i", str(hf_dir), "-o", str(out),
        "-p", precision, "-e", "cpu", "-c", str(cache),
    ]  # fmt: skip
    if precision != "fp32":
        command += ["--extra_options", f"block_size={block_size or DEFAULT_BLOCK_SIZE}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out / CONFIG_FILE).is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-MAX_LOG_LINES:])
        raise BadInput(f"the onnxruntime-genai export at {precision} failed:\n{tail}")
    return out


def weight_bytes(folder: Path) -> int:
    """Bytes of the exported model's ONNX graph and external weights."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))
