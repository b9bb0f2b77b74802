"""Making the model smaller: prune, distil, quantize (with SmoothQuant) and the precision ladder.

`tensor` orders the steps for tensor models; a text model's path (`tasks.text`) uses the same
pieces (`prune`, `quantize`, `ladder`) and distils through `textdistill`.
"""
