"""A generative canary's quality analysis on the real tritonserver: `model-repo-builder analyze` replays the
build's probe prompts (rendered chats and the original's greedy answers, as a text-generation build
writes them) on a canary and the stable SmolLM2 and compares their greedy answers token by token.

One Triton serves three models: the stable ("smol", fp32 export), a canary of the same weights
("smol-canary") and a canary with another model's weights ("other": SmolLM2's architecture and
tokenizer with freshly initialised weights, exported the same way). The first canary passes with full
agreement; the second fails with its greedy agreement, the number, in the reason (exit code 4)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model_repo_builder import cli
from model_repo_builder.data import prompts
from model_repo_builder.export import genai
from model_repo_builder.gate import analyze, probes
from model_repo_builder.gate import generation as gengate
from model_repo_builder.recipe import Validation
from model_repo_builder.sources import causal
from model_repo_builder.tasks import generation as gentask
from model_repo_builder.triton import generation
from tests.support import llm
from tests.support.triton import Triton, run_triton

pytestmark = pytest.mark.serving
PROBE_PROMPTS = 4


def _other_weights(model: causal.CausalModel, work: Path) -> Path:
    """SmolLM2's architecture and tokenizer with freshly initialised weights, exported at fp32."""
    hf_dir = llm.other_weights(model, work / "other-hf")
    return genai.export(hf_dir, work / "genai-other", "none", block_size=None, cache=work / "cache")


@pytest.fixture(scope="module")
def canaries(serving_dir: Path, smollm2_repository: tuple[Path, Any]) -> Iterator[tuple[Triton, Path]]:
    stable_repo, model = smollm2_repository
    work = serving_dir / "canary-analysis"
    repo = work / "repo"
    repo.mkdir(parents=True)
    served = stable_repo / "smol" / "1" / "genai"
    folders = {"smol": served, "smol-canary": served, "other": _other_weights(model, work)}
    for name, folder in folders.items():
        generation.write_generation_model(
            repo, name, folder, context_length=llm.CONTEXT, max_tokens_default=64, instances=1
        )
    data = prompts.gate_data(Validation(samples=PROBE_PROMPTS))
    eos = gentask._eos_ids(model)
    reference = gengate.reference(model.module, eos, gengate.tokenize(model.tokenizer, data))
    probes.write(repo, gentask._probes("smol", model, data, reference))  # as the build writes it
    with run_triton(repo, work) as triton:
        yield triton, repo


def _analyse(triton: Triton, repo: Path, canary_model: str) -> dict[str, Any]:
    return analyze.analyse(
        analyze.Request(
            probes=repo, canary=[triton.http_url], stable=[triton.http_url],
            thresholds=analyze.Thresholds(None, None, None, 0.9), model="smol", canary_model=canary_model,
        )
    )  # fmt: skip


def test_a_canary_of_the_same_weights_agrees_token_for_token(canaries: tuple[Triton, Path]) -> None:
    triton, repo = canaries
    result = _analyse(triton, repo, "smol-canary")
    assert result["result"] == "passed", result
    assert result["metrics"] == {"greedyAgreement": 1.0, "identicalAnswers": 1.0}
    assert result["probes"]["unit"] == "tokens" and result["probes"]["count"] == PROBE_PROMPTS
    assert result["requests"] == 2 * PROBE_PROMPTS
    # the fp32 export served greedily answers as the original transformers model did
    assert result["reference"]["stable"]["greedyAgreement"] >= 0.9, result["reference"]


def test_a_canary_with_another_models_weights_fails_with_its_agreement(
    canaries: tuple[Triton, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    triton, repo = canaries
    summary = tmp_path / "termination-log"
    code = cli.main([
        "analyze", "--probes", str(repo), "--canary", triton.http_url, "--stable", triton.http_url,
        "--model-name", "smol", "--canary-model-name", "other", "--min-cosine", "none",
        "--min-top1-agreement", "none", "--min-greedy-agreement", "0.9", "--summary-file", str(summary),
    ])  # fmt: skip
    result = json.loads(summary.read_text())
    assert code == analyze.EXIT_QUALITY_FAILED, result
    failing = result["failing"]
    assert failing["metric"] == "greedyAgreement" and failing["bound"] == "minGreedyAgreement"
    assert failing["value"] < 0.5, result
    assert f"greedyAgreement {failing['value']:.6g} < minGreedyAgreement 0.9" in result["reason"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
