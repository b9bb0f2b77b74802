"""An OpenAI-compatible HTTP API in front of a streaming Triton LLM model (the text-generation task).

Runs in the serving pod beside tritonserver: `/v1/chat/completions`, `/v1/completions` and `/v1/models`,
with Server-Sent Events for `stream: true`, translated to the decoupled Triton model's gRPC stream
(`model_repo_builder/triton/python_backend/genai_model.py`). Starlette and uvicorn do the HTTP; this
package only validates requests (`schema`), talks to Triton (`triton`) and shapes OpenAI's answers (`app`).
"""
