"""Distillation benchmark: what distilling the original model into the compressed one wins back.

Writes bench/results/distill.json. Not a test: it reports the numbers it gets, met or not, with the
wall time each distillation took on this machine. Everything goes through the real builder CLI.

- Digits CNN (sklearn digits, float64 training as in the tests) over 5 training seeds, side by side:
  30% channel prune alone vs prune + distill vs prune + distill + int8-static; accuracy drop on the
  held-out digits (with labels) and size. Distillation data: the training split, without labels.
  Target: prune + distill + int8 within 0.5 points for 5 of 5 seeds at >= 6x smaller than fp32.
- all-MiniLM-L6-v2, 6 -> 3 layers (keepLayers), distilled on sentences from the docstrings of
  Python's standard library (real English, offline); the gate's held-out sentences come from other
  modules. Mean cosine vs the 6-layer teacher through the served path, throughput gain of the served
  student over the served fp32 teacher, and with int8 on top. Target: cosine >= 0.95 at >= 1.8x
  throughput; int8 on top >= 3.5x the fp32 teacher.

`--quick` runs fewer seeds and steps (a smoke run; its numbers are not the benchmark's).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent

from model_repo_builder import recipe as recipe_mod  # noqa: E402
from model_repo_builder.compression.tensor import quantize  # noqa: E402
from model_repo_builder.export.optimize import time_models  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
# 3000 steps on mixtures of digit pairs the teacher answers (mixup): without mixup, 1000 steps meet
# the 0.5-point target for 2 of 5 seeds and 3000 steps for 3-4 of 5 (bench runs while tuning)
DIGITS_DISTILL = {"steps": 3000, "batchSize": 32, "mixup": 0.4}
# 600 steps (not the default 1000) keep the whole benchmark near 10 minutes on 2 cores
MINILM_DISTILL = {"keepLayers": 3, "steps": 600, "batchSize": 32}  # the default learning rate (5e-4)
TRAIN_SENTENCES, HELD_OUT_SENTENCES = 8000, 200
BATCH, SEQ = 8, 128  # throughput as in bench_builder: batch 8, 128 tokens


def build(args: list[str]) -> dict[str, Any]:
    """Run the builder CLI in-process; returns its summary plus build.json and the wall time."""
    from model_repo_builder.cli import main

    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    summary: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    summary["exitCode"], summary["wallSeconds"] = code, round(time.perf_counter() - start, 2)
    if code != 0:
        sys.stderr.write(err.getvalue()[-3000:])
    if summary.get("repository"):
        summary["record"] = json.loads((Path(summary["repository"]) / "build.json").read_text())
    return summary


# ---- digits ---------------------------------------------------------------------------------------


def digits_seed(work: Path, seed: int, distill: dict[str, Any]) -> dict[str, Any]:
    from tests.builder import models

    start = time.perf_counter()
    model, x_train, _, x_test, y_test = models.train_digits_cnn(seed=seed)
    teacher_seconds = time.perf_counter() - start
    src = models.save_onnx(model, torch.from_numpy(x_test[:2]), work / f"digits-{seed}.onnx")
    np.savez(work / "val.npz", x=x_test, labels=y_test)
    np.savez(work / "train.npz", x=x_train)  # no labels: the teacher's outputs are the targets
    common = ["build", str(src), "--out", str(work / f"store-{seed}"), "--validation-data",
              str(work / "val.npz"), "--validation-samples", "1000", "--min-cosine", "0",
              "--prune-method", "channel", "--prune-amount", "0.3"]  # fmt: skip
    with_distill = {"distill": {"dataPath": str(work / "train.npz"), **distill}}
    variants = {
        "prune30": [],
        "prune30+distill": ["--recipe-json", json.dumps(with_distill)],
        "prune30+distill+int8-static": [
            "--quantize", "int8-static",
            "--recipe-json", json.dumps({**with_distill, "quantize": {"perChannel": True}}),
        ],
    }  # fmt: skip
    out: dict[str, Any] = {"teacherTrainingSeconds": round(teacher_seconds, 2)}
    for name, extra in variants.items():
        s = build(common + extra)
        gate, record = s["gate"], s.get("record", {})
        out[name] = {
            "accuracyOriginal": gate.get("accuracyOriginal"),
            "accuracyDropPoints": round(100 * gate.get("accuracyDrop", float("nan")), 3),
            "sizeBefore": s["sizeBefore"],
            "sizeAfter": s["sizeAfter"],
            "sizeRatio": s["compressionRatio"],
            "buildSeconds": s["wallSeconds"],
        }
        if "distill" in record:
            d = record["distill"]
            out[name]["distillSeconds"] = d["wallSeconds"]
            out[name]["loss"] = d["loss"]
            out[name]["lossFirstLast"] = [d["lossCurve"]["first"], d["lossCurve"]["last"]]
            out[name]["parameters"] = [d["student"]["parametersBefore"], d["student"]["parametersAfter"]]
    return out


def digits(work: Path, seeds: tuple[int, ...], distill: dict[str, Any]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    per_seed = {str(s): digits_seed(work, s, distill) for s in seeds}
    final = "prune30+distill+int8-static"
    drops = {k: [per_seed[str(s)][k]["accuracyDropPoints"] for s in seeds] for k in per_seed[str(seeds[0])]
             if k != "teacherTrainingSeconds"}  # fmt: skip
    ratios = [per_seed[str(s)][final]["sizeRatio"] for s in seeds]
    accurate = sum(d <= 0.5 for d in drops[final])
    small = sum(r >= 6 for r in ratios)
    return {
        "distill": distill,
        "seeds": per_seed,
        "dropPointsBySeed": drops,
        "targets": {
            "prune+distill+int8 drop<=0.5pt (seeds met)": f"{accurate}/{len(seeds)}",
            "prune+distill+int8 >=6x smaller than fp32 (seeds met)": f"{small}/{len(seeds)}",
            "met": accurate == len(seeds) and small == len(seeds),
        },
        "note": "sizes are whole ONNX files (sizeBefore: the unpruned fp32 export). The CNN has ~5k "
        "parameters, so the graph itself (node and tensor names, QDQ scales) is a large share of "
        "the int8 file; parameters shrink 2.0x by pruning and 4x by int8.",
    }


# ---- MiniLM ---------------------------------------------------------------------------------------

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def stdlib_sentences() -> tuple[list[str], list[str]]:
    """English sentences from the standard library's docstrings; a tenth of the modules held out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train: list[str] = []
    held: list[str] = []
    seen: set[str] = set()
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("test", "idlelib", "lib2to3", "site-packages")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        bucket = held if int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 10 == 0 else train
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for sentence in _sentences(ast.get_docstring(node) or ""):
                    if sentence not in seen:
                        seen.add(sentence)
                        bucket.append(sentence)
    return train, held


def _sentences(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        for s in _SPLIT.split(" ".join(para.split())):
            letters = sum(c.isalpha() or c == " " for c in s)
            if 40 <= len(s) <= 200 and s[0].isupper() and s.endswith(".") and letters / len(s) > 0.9:
                out.append(s)
    return out


def _embed(repo: Path, model: Path, texts: list[str]) -> np.ndarray:
    """Embeddings as the ensemble serves them: its tokenizer step, `model`, mean pooling + L2 norm."""
    from model_repo_builder.sources.formats import onnx_runner
    from model_repo_builder.triton.python_backend import textproc

    settings = textproc.TokenizerSettings(128, True, 0, "[PAD]")  # MiniLM: [PAD] is id 0
    tokenizer = textproc.TextTokenizer(str(next(repo.rglob("tokenizer.json"))), settings)
    run = onnx_runner(model)
    parts = []
    for start in range(0, len(texts), 16):
        ids, mask = tokenizer(texts[start : start + 16])
        parts.append(textproc.pool(run({"input_ids": ids, "attention_mask": mask})[0], mask, "mean", True))
    return np.concatenate(parts)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    return float((num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def minilm(work: Path, distill: dict[str, Any], train_count: int) -> dict[str, Any]:
    from tests.builder.textmodels import minilm_dir

    work.mkdir(parents=True, exist_ok=True)
    train, held = stdlib_sentences()
    (work / "train.txt").write_text("\n".join(train[:train_count]) + "\n")
    (work / "held.txt").write_text("\n".join(held[:HELD_OUT_SENTENCES]) + "\n")
    base = {
        "text": {"task": "feature-extraction"},
        "quantize": {"mode": "none"},
        "validation": {"dataPath": str(work / "held.txt"), "samples": HELD_OUT_SENTENCES},
        "gate": {"minCosine": 0.0},
        "triton": {"instanceKind": "KIND_CPU"},
    }
    teacher = build(["build", str(minilm_dir()), "--out", str(work / "t"), "--recipe-json", json.dumps(base)])
    student_recipe = {**base, "distill": {"dataPath": str(work / "train.txt"), **distill}}
    student = build(
        ["build", str(minilm_dir()), "--out", str(work / "s"), "--recipe-json", json.dumps(student_recipe)]
    )
    s_repo, t_repo = Path(student["repository"]), Path(teacher["repository"])
    s_fp32 = s_repo / "model_model" / "1" / "model.onnx"
    s_int8 = work / "student-int8.onnx"
    calib = _calibration(t_repo, train[:64])
    quantize(
        s_fp32,
        s_int8,
        recipe_mod.Recipe.model_validate({"text": {"task": "feature-extraction"}}).quantize,
        calib,
    )  # fmt: skip  (what the builder does by default for text: int8 + SmoothQuant 0.7)
    texts = held[:HELD_OUT_SENTENCES]
    t_fp32 = t_repo / "model_model" / "1" / "model.onnx"
    int8_cos = _cosine(_embed(t_repo, t_fp32, texts), _embed(s_repo, s_int8, texts))
    speed = _throughput([t_fp32, s_fp32, s_int8])
    d = student["record"]["distill"]
    out = {
        "distill": distill,
        "trainSentences": train_count,
        "heldOutSentences": len(texts),
        "distillWallSeconds": d["wallSeconds"],
        "secondsPerStep": d["secondsPerStep"],
        "threads": d["threads"],
        "lossFirstLast": [d["lossCurve"]["first"], d["lossCurve"]["last"]],
        "studentBuildSeconds": student["wallSeconds"],
        "teacherBuildSeconds": teacher["wallSeconds"],
        "student": d["student"],
        "cosineVsTeacher": {"student-fp32": student["gate"]["cosine"], "student-int8": round(int8_cos, 6)},
        "sizeBytes": {
            "teacher-fp32": teacher["sizeAfter"],
            "student-fp32": student["sizeAfter"],
            "student-int8": s_int8.stat().st_size,
        },
        "sentencesPerSecond": speed,
    }
    base_speed = speed["teacher-fp32"]
    gain = {k: round(v / base_speed, 3) for k, v in speed.items()}
    out["throughputVsTeacherFp32"] = gain
    cos = out["cosineVsTeacher"]
    out["targets"] = {
        "student cosine>=0.95": cos["student-fp32"] >= 0.95,
        "student throughput>=1.8x": gain["student-fp32"] >= 1.8,
        "student+int8 throughput>=3.5x": gain["student-int8"] >= 3.5,
    }
    return out


def _calibration(repo: Path, texts: list[str]) -> dict[str, np.ndarray]:
    from model_repo_builder.triton.python_backend import textproc

    settings = textproc.TokenizerSettings(128, True, 0, "[PAD]")
    ids, mask = textproc.TextTokenizer(str(next(repo.rglob("tokenizer.json"))), settings)(texts)
    return {"input_ids": ids, "attention_mask": mask}


def _throughput(paths: list[Path]) -> dict[str, float]:
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(1000, 20000, (BATCH, SEQ)).astype(np.int64),
        "attention_mask": np.ones((BATCH, SEQ), np.int64),
    }
    best: list[float] = [float("inf")] * len(paths)
    for _ in range(4):  # interleaved rounds of best-of-5 each: every model sees the same machine state
        best = [min(b, ms) for b, ms in zip(best, time_models(paths, feed), strict=True)]
    names = ["teacher-fp32", "student-fp32", "student-int8"]
    return {n: round(BATCH * 1000.0 / ms, 2) for n, ms in zip(names, best, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 seed, few steps: a smoke run")
    parser.add_argument("--only", choices=["digits", "minilm"])
    args = parser.parse_args()
    seeds = SEEDS[:1] if args.quick else SEEDS
    digits_cfg = {**DIGITS_DISTILL, "steps": 100} if args.quick else DIGITS_DISTILL
    minilm_cfg = {**MINILM_DISTILL, "steps": 20} if args.quick else MINILM_DISTILL
    torch.manual_seed(0)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="conch-bench-distill-") as tmp:
        work = Path(tmp)
        if args.only != "minilm":
            result["digitsCnn"] = digits(work / "digits", seeds, digits_cfg)
        if args.only != "digits":
            result["minilm"] = minilm(work / "minilm", minilm_cfg, 400 if args.quick else TRAIN_SENTENCES)
    result["wallSeconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2) + "\n"
    if not args.quick and args.only is None:
        out = ROOT / "results" / "distill.json"
        out.parent.mkdir(exist_ok=True)
        tmp_out = out.with_suffix(".json.tmp")
        tmp_out.write_text(text)
        tmp_out.replace(out)
    print(text)


if __name__ == "__main__":
    main()
