"""What Triton loads: config.pbtxt, a tensor model's folder, the text ensemble and python-backend steps.

`python_backend` holds the model.py files copied into repositories; they run inside Triton's python
backend on their own and never import this package.
"""
