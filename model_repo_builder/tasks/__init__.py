"""The tasks a build can have and how each is built: the task registry and the build paths.

The task names live one level up (`tasknames`, imported by the operator and `recipe` without torch),
and so does `textkind`, the hooks a text entry answers (the steps under `sources/`, `triton/` and
`compression/` take an entry's hooks, so the type sits below them). `registry` (imported by the
pipeline) loads every path: `tensor`, and `text` with the text entries `embedding` and
`classification`. Nothing below this package imports it.
"""
