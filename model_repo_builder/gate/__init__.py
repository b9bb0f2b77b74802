"""Judging a model by its answers: the build's accuracy gate and the canary's quality analysis.

`verify` holds the gate's metrics and thresholds; `probes` the probe set kept with each build;
`analyze` and `tritonhttp` send those probes to a canary and the stable version and compare them.
"""
