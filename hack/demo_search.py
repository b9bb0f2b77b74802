"""The text half of `make demo`: a small semantic search through the MiniLM ensemble served by Triton.

A few documents and a query are embedded through the served text endpoint (UTF-8 strings in,
embeddings out: tokenizer, int8 model and pooling all run inside Triton), the documents are ranked
by cosine to the query, and the same sentences go through the original `transformers` model to show
how close the served embeddings are and whether the ranking is the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import tritonclient.http as triton_http

DOCUMENTS = [
    "Triton's dynamic batcher groups requests that arrive close together into one batch.",
    "Knead the dough for ten minutes, then let it rise until doubled in size.",
    "A PodDisruptionBudget keeps a minimum number of replicas running during node drains.",
    "The museum is closed on Mondays and open late on Thursdays.",
    "Int8 quantization stores weights in eight bits and makes models about four times smaller.",
    "Our hiking club meets at the station every Saturday at eight.",
    "The horizontal pod autoscaler adds pods when the average queue time grows.",
]
QUERY = "How do I keep my service up while nodes are drained?"


def embed_served(url: str, model: str, texts: list[str], token: str) -> np.ndarray:
    """Embeddings from the served ensemble (HTTP with the bearer token, one request per batch of up
    to 8 texts)."""
    client = triton_http.InferenceServerClient(url)
    parts = []
    for start in range(0, len(texts), 8):
        chunk = np.array([[t.encode()] for t in texts[start : start + 8]], dtype=object)
        request = triton_http.InferInput("text", list(chunk.shape), "BYTES")
        request.set_data_from_numpy(chunk)
        answer = client.infer(model, [request], headers={"Authorization": f"Bearer {token}"})
        parts.append(np.asarray(answer.as_numpy("embedding")))
    client.close()
    return np.concatenate(parts)


def embed_original(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The original model: transformers + mean pooling + L2 normalisation, in fp32."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def search(url: str, model: str, model_dir: Path, token: str) -> None:
    """Rank DOCUMENTS for QUERY with served embeddings; print the top 3 and the agreement."""
    texts = [QUERY, *DOCUMENTS]
    served = embed_served(url, model, texts, token)
    original = embed_original(model_dir, texts)
    served_scores, original_scores = served[1:] @ served[0], original[1:] @ original[0]
    print(f'  query: "{QUERY}"')
    for rank, index in enumerate(np.argsort(-served_scores)[:3], start=1):
        print(f"  {rank}. {served_scores[index]:.3f}  {DOCUMENTS[index]}")
    cosine = float((served * original).sum(1).mean())
    same = list(np.argsort(-served_scores)) == list(np.argsort(-original_scores))
    print(f"  served vs original: mean cosine {cosine:.4f} over {len(texts)} texts; same ranking: {same}")
