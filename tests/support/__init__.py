"""What the tests, the demo and the benchmarks share besides fixtures: the digits model, the load
generator, and the loopback tritonserver runner. Importable as `tests.support` from the repository root."""
