"""Package data: the Triton python-backend model.py copied into repositories built for ``python``."""

from pathlib import Path

MODEL_PY = Path(__file__).with_name("model.py")
