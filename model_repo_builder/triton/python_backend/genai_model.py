"""The streaming python-backend model of a generative LLM (onnxruntime-genai): lands with the serving
work of issue 20. Until then a repository built for text-generation is built, gated and verified but
is not served; this file is what `triton.generation` copies as the model's 1/model.py."""
