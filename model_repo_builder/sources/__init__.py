"""Where a build's model comes from: fetched sources and the loaders that read them.

`fetch` resolves a source URI through a scheme registry (a store path or ``file://``, ``http(s)://``
with a mandatory sha256) into a local file or Hugging Face model directory (or a ``.tar.gz`` of one,
unpacked by `archive`), within the byte caps of `limits`; `checkfiles` refuses malformed safetensors
and tokenizer.json files by name before anything loads them; `formats` loads tensor model files
(.pt, .pt2, .onnx) and `hf` a checkpoint directory.

A new kind of source goes here. A remote store (e.g. ``s3://``) is one fetcher function registered
with ``fetch.register_scheme``; a new file format (e.g. a GGUF file for generative models) is a loader
module here next to `formats` and `hf`, used by the task entry (`tasks`) that builds such models.
"""
