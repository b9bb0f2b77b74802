"""Helpers shared by the chart tests: where the chart and the binaries are, running helm, parsing output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conch"
CACHE = Path(os.environ.get("CONCH_CACHE", Path.home() / ".cache" / "conch"))
BIN = CACHE / "bin"
HELM = BIN / "helm"

Obj = dict[str, Any]


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run helm (isolated from the user's helm config); AssertionError on failure when `check`."""
    env = dict(os.environ)
    for var in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{var}_HOME"] = f"/tmp/conch-helm/{var.lower()}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template(*args: str, namespace: str = "conch-system", release: str = "conch") -> str:
    """`helm template` of the chart; extra args are passed through (--set, --api-versions ...)."""
    return helm("template", release, str(CHART), "--namespace", namespace, *args).stdout


def objects(rendered: str) -> list[Obj]:
    """The non-empty documents of a rendered manifest."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def one(docs: list[Obj], kind: str) -> Obj:
    """The only object of this kind."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
