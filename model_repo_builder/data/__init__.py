"""The inputs a build runs models on: validation, calibration and distillation data.

`arrays` reads or generates tensor inputs, `texts` reads text files or the built-in sentences, and
`distillsets` loads distillation data and refuses overlap with the gate's validation data.
"""
