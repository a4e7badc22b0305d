"""The audit of the paper's claims: modes, the claim ledger, statistics, the typed results and the verdicts."""
