"""Bundle solver, energies, corners and theorem checks (SPEC.md sections 1, 4, 5)."""
