"""The project's demo and developer tooling (`python -m hack.demo` from the repository root: `make demo`)."""
