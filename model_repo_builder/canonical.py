"""Canonical JSON: the one byte form of a value that the builder hashes (sorted keys, no spaces).

The recipe's canonical JSON (`recipe.canonical_json`) and the build key's material
(`store.repository.build_key`) are written here, so both hash the same form. Two other JSON texts
keep their own forms on purpose: build.json is indented for people (`store.repository`), and a
directory source's digest (`sources.fetch.sha256_directory`) hashes a listing with json's default
separators; changing either would change existing files or digests. Only the standard library is
imported: the operator image (no torch) imports `recipe`, which imports this module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def dumps(value: Any) -> str:
    """`value` as canonical JSON text: sorted keys, ``,`` and ``:`` separators, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def sha256(value: Any) -> str:
    """Hex sha256 of `value`'s canonical JSON."""
    return hashlib.sha256(dumps(value).encode()).hexdigest()
