"""Serialising the model for Triton: ONNX and TorchScript exports, and transformer fusions.

`exporters` turns torch modules and torch.export programs into batch-dynamic ONNX (or TorchScript);
`optimize` applies onnxruntime's transformer fusions when they make the published model faster.
"""
