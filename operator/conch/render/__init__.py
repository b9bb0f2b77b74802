"""Pure renderers: one module per child kind, each turning a parsed spec into the desired object (a dict).

No I/O happens here; `apply` writes what these return, and a kind whose renderer returns None must
not exist (the apply layer deletes it).
"""
