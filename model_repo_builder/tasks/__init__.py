"""The tasks a build can have and how each is built: the task registry and the build paths.

`names` spells the task names and imports nothing heavy (the operator and `recipe` import it), so
this package's import does nothing either; `registry` (imported by the pipeline) loads every path:
`tensor`, and `text` with the text entries `embedding` and `classification` (`textkind` their hooks).
"""
