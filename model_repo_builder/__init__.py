"""Conch's model repository builder: PyTorch/ONNX model -> compressed, verified Triton repository.

Only light modules are imported here so that ``import model_repo_builder.recipe`` works in the
operator image, which has no torch.
"""

__version__ = "0.1.0"
BUILDER_VERSION = __version__
