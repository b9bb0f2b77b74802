"""Package data: the Triton python-backend models copied into repositories.

model.py serves an ONNX file through onnxruntime (``python`` backend builds); tokenizer_model.py and
post_model.py are the first and last steps of a text model's ensemble, and textproc.py is the code
both share with the builder's accuracy gate; genai_model.py streams a generative model's tokens
(decoupled) with its scheduler (llmsched.py), batched decoder (llmbatch.py) and metrics (llmmetrics.py)
beside it.
"""

from pathlib import Path

HERE = Path(__file__).parent
MODEL_PY = HERE / "model.py"
TOKENIZER_PY = HERE / "tokenizer_model.py"
POST_PY = HERE / "post_model.py"
TEXTPROC_PY = HERE / "textproc.py"
GENAI_PY = HERE / "genai_model.py"
GENAI_SIBLINGS = (HERE / "llmsched.py", HERE / "llmbatch.py", HERE / "llmmetrics.py")
