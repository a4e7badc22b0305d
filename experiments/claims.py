"""The paper's claims as data (SPEC.md section 4) and the verdicts a measurement can give them."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not reproduced"
    REFUTED = "refuted"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Claim:
    """One claim: its id, what the paper says, the number it gives, and where it says it."""

    id: str
    statement: str
    paper_value: str
    source: str


CLAIMS: tuple[Claim, ...] = (
    Claim("frob-70m", "pure bundle (lambda=0, untied) reduces the two-sided Frobenius error vs SVD-LLM, "
          "Pythia-70M W_O, d/D=0.25", "46.4 %", "paper, Frobenius table (SPEC.md section 4)"),
    Claim("frob-1.4b", "same, Pythia-1.4B", "37.2 %", "paper, Frobenius table"),
    Claim("thm1-rate", "||P_U(lambda) - P_A||_F decays like 1/lambda; fitted log-log slope", "about -1",
          "paper, Theorem 1"),
    Claim("thm2", "tied bundle strictly beats Basis-Sharing-core on E2 when all W_l are square and one is "
          "non-symmetric", "strict", "paper, Theorem 2"),
    Claim("cor3", "closed-form second-order principal-angle expansion of E2(U_BS) - E2(U*) matches direct "
          "evaluation", "to fp precision", "paper, Corollary 3"),
    Claim("ppl-gbd", "WikiText-2 PPL, Pythia-1.4B, W_O at d/D=0.25: pure bundle vs SVD-LLM V1",
          "159.14 vs 50.17", "paper, perplexity table"),
    Claim("hs-drop", "HellaSwag accuracy, same setting (V1 -> pure bundle)", "43.5 % -> 30.3 %",
          "paper, HellaSwag table"),
    Claim("interior", "every interior configuration tested is worse than V1 in PPL", "by 2.8x to 23x",
          "paper, lambda sweep"),
    Claim("mechanism", "activation error tracks PPL (high Spearman); Frobenius error does not (negative in "
          "the interior)", "qualitative", "paper, discussion"),
    Claim("tie-bs", "Basis-Sharing-core collapses to near-random language modeling", "qualitative",
          "paper, discussion"),
)


def claim(claim_id: str) -> Claim:
    """The claim with this id."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}")
