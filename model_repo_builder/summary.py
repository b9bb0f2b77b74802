"""The one-line JSON summary the operator reads from the Job's termination message (<= 4 KiB)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from . import BUILDER_VERSION
from .recipe import SUMMARY_MAX_BYTES

ERROR_CHARS = 200
"""A ladder rung's error is cut to this many characters in the summary (build.json keeps it whole)."""


def make_summary(
    info: dict[str, Any], record: dict[str, Any] | None, cached: bool, error: tuple[str, str] | None
) -> dict[str, Any]:
    """Summary dict from what the build knew (info), its build.json record and the error, if any."""
    rec = record or {}
    gate = rec.get("gate") or ({"passed": False, **info["gate"]} if "gate" in info else {"passed": False})
    return {
        "ok": error is None,
        "buildKey": rec.get("buildKey", info.get("buildKey", "")),
        "repository": info.get("repository", "") if error is None else "",
        "modelName": rec.get("modelName", info.get("modelName", "")),
        "cached": cached,
        "builderVersion": rec.get("builderVersion", BUILDER_VERSION),
        "sourceDigest": rec.get("sourceDigest", info.get("sourceDigest", "")),
        "sizeBefore": int(rec.get("sizeBefore", 0)),
        "sizeAfter": int(rec.get("sizeAfter", 0)),
        "compressionRatio": float(rec.get("compressionRatio", 0.0)),
        "gate": gate,
        **_extras(rec),
        "error": None if error is None else {"kind": error[0], "message": error[1]},
    }


def _extras(record: dict[str, Any]) -> dict[str, Any]:
    """The distillation summary and, with a precision ladder, which mode was published and why not others."""
    out: dict[str, Any] = {}
    d = record.get("distill")
    if isinstance(d, dict):
        curve = d.get("lossCurve") or {}
        out["distill"] = {
            "steps": d.get("steps"),
            "wallSeconds": d.get("wallSeconds"),
            "loss": [curve.get("first"), curve.get("last")],
            "student": (d.get("student") or {}).get("kind", ""),
        }
    q = record.get("quantize")
    if isinstance(q, dict) and len(q.get("ladder") or []) > 1:
        failed = [
            {**a, "error": str(a["error"])[:ERROR_CHARS]} if "error" in a else dict(a)
            for a in q.get("attempts") or []
            if not a.get("passed")
        ]
        out["quantize"] = {"published": q.get("published"), "failed": failed}
    return out


def dumps(summary: dict[str, Any]) -> str:
    """One line of JSON no longer than SUMMARY_MAX_BYTES; the error message is cut first."""
    line = json.dumps(summary, separators=(",", ":"), sort_keys=False)
    if len(line.encode()) <= SUMMARY_MAX_BYTES:
        return line
    if summary.get("error"):
        over = len(line.encode()) - SUMMARY_MAX_BYTES + 16
        msg = summary["error"]["message"]
        summary = {
            **summary,
            "error": {**summary["error"], "message": msg[: max(0, len(msg) - over)] + "..."},
        }
        line = json.dumps(summary, separators=(",", ":"))
    if len(line.encode()) > SUMMARY_MAX_BYTES:
        summary = {**summary, "gate": {"passed": summary["gate"].get("passed", False)}}
        line = json.dumps(summary, separators=(",", ":"))
    if len(line.encode()) > SUMMARY_MAX_BYTES and "quantize" in summary:
        summary = {**summary, "quantize": {"published": summary["quantize"].get("published")}}
        line = json.dumps(summary, separators=(",", ":"))
    return line


def emit(summary: dict[str, Any], stdout: TextIO, path: str | None) -> None:
    """Print the summary as the last stdout line and write it to the termination-message file."""
    line = dumps(summary)
    stdout.write(line + "\n")
    stdout.flush()
    if path:
        Path(path).write_text(line, encoding="utf-8")


def table(record: dict[str, Any], timings: dict[str, float]) -> str:
    """Human summary table (stderr) at the end of a build."""
    rows = [
        ("model", str(record.get("modelName", ""))),
        ("size before", f"{record.get('sizeBefore', 0):,} B"),
        ("size after", f"{record.get('sizeAfter', 0):,} B"),
        ("compression", f"{record.get('compressionRatio', 0)}x"),
    ]
    rows += [(f"gate {k}", str(v)) for k, v in (record.get("gate") or {}).items()]
    rows += [(f"time {k}", f"{v:.2f}s") for k, v in timings.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
