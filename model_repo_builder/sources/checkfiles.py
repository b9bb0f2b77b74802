"""Check a checkpoint's safetensors weights and tokenizer.json before anything loads them.

`transformers` reads these files through the `safetensors` and `tokenizers` extensions, whose errors
are bare Exceptions with a message about a byte offset or an enum variant and no file name: a
truncated shard or a hand-edited tokenizer.json would surface as an internal error. These checks read
only what is cheap (a safetensors file's header, a tokenizer.json through `tokenizers` itself) and
refuse a bad file with one BadInput line naming it, so the later loads meet well-formed files.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ..errors import BadInput

MAX_HEADER = 100_000_000
"""The `safetensors` library refuses headers over 100 MB; so do we, before reading one into memory."""
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
"""Element sizes of the dtypes a checkpoint uses; a dtype not listed here is left to the library."""


def check_checkpoint_files(directory: Path) -> None:
    """Every *.safetensors file and the tokenizer.json of `directory`, when there is one."""
    for path in sorted(directory.glob("*.safetensors")):
        check_safetensors(path, f"{directory.name}/{path.name}")
    tokenizer = directory / "tokenizer.json"
    if tokenizer.is_file():
        check_tokenizer_json(tokenizer, f"{directory.name}/tokenizer.json")


def check_safetensors(path: Path, name: str) -> None:
    """The header parses and every tensor's bytes lie within the file and match its dtype and shape."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadInput(f"{name}: not a safetensors file ({size} bytes, less than its header length)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER):
            raise BadInput(
                f"{name}: safetensors header length {length} is beyond the file's {size} bytes "
                "(truncated or not a safetensors file)"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{name}: the safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadInput(f"{name}: the safetensors header is not a JSON object")
    data = size - 8 - length
    for tensor, entry in header.items():
        if tensor != "__metadata__":
            _check_tensor(name, tensor, entry, data)


def _check_tensor(name: str, tensor: str, entry: Any, data: int) -> None:
    where = f"{name}: tensor {tensor!r}"
    if not isinstance(entry, dict):
        raise BadInput(f"{where}: not a JSON object in the header")
    offsets, shape, dtype = _ints(entry.get("data_offsets")), _ints(entry.get("shape")), entry.get("dtype")
    if offsets is None or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
        raise BadInput(f"{where}: data_offsets {entry.get('data_offsets')!r} is not [begin, end]")
    if shape is None or any(d < 0 for d in shape):
        raise BadInput(f"{where}: shape {entry.get('shape')!r} is not a list of sizes")
    if not isinstance(dtype, str):
        raise BadInput(f"{where}: dtype {dtype!r} is not a name")
    if offsets[1] > data:
        raise BadInput(
            f"{where}: its bytes end at {offsets[1]}, past the file's {data} bytes of data (truncated?)"
        )
    width = _DTYPE_BYTES.get(dtype)
    if width is not None and (offsets[1] - offsets[0]) != math.prod(shape) * width:
        raise BadInput(
            f"{where}: {offsets[1] - offsets[0]} bytes do not hold a {dtype} tensor of shape {shape}"
        )


def _ints(value: Any) -> list[int] | None:
    """`value` when it is a list of integers, else None."""
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    return None


def check_tokenizer_json(path: Path, name: str) -> None:
    """tokenizer.json is a JSON object that `tokenizers` loads."""
    import tokenizers

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{name}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"{name}: not a JSON object (a tokenizers tokenizer)")
    try:
        tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the extension raises a bare Exception for any structural problem
        raise BadInput(f"{name}: not a tokenizer `tokenizers` can load: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
