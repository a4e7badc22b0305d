"""Runs: each part of a reproduction as JSON-ready data (never Markdown): modes, the plan of configurations,
the shared context, the one row runner, the theory audit, the phase diagram, the surgery, what the paper left
open, plugins and the benchmark."""
