"""One adapter per architecture family: where the layers to compress live and how to read/replace them.

Nothing else in the project knows architectures. A *target* is a linear map y = W x + b of one block,
named by kind:

| kind     | GPT-NeoX (Pythia)             | Llama (SmolLM2)     | GPT-2          |
| attn_out | attention.dense (bias)        | self_attn.o_proj    | attn.c_proj    |
| mlp_out  | mlp.dense_4h_to_h             | mlp.down_proj       | mlp.c_proj     |
| mlp_in   | mlp.dense_h_to_4h             | mlp.up_proj         | mlp.c_fc       |
| mlp_gate | -                             | mlp.gate_proj       | -              |
| qkv      | attention.query_key_value     | -                   | attn.c_attn    |
| q, k, v  | -                             | self_attn.{q,k,v}_proj | -           |

Composite kinds (``COMPOSITE_KINDS``) list several kinds block by block, e.g. ``mlp_chain`` is
[up_1, gate_1, down_1, up_2, ...]; a family lacking one part (the gate outside Llama; split Q/K/V in GPT-NeoX,
whose fused query_key_value is already one matrix) is a clear error.

Weights are returned as float64 numpy arrays of shape (n_out, n_in) whatever the storage
(GPT-2's Conv1D stores W^T).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from experiments.errors import GbdError

COMPOSITE_KINDS: dict[str, tuple[str, ...]] = {
    "mlp_chain": ("mlp_in", "mlp_gate", "mlp_out"),     # per block: up, gate, down
    "q_k_v": ("q", "k", "v"),                            # per block: the three projections reading one input
}


@dataclass(frozen=True)
class Adapter:
    """Layout of one architecture family: the block list and each target kind's path in a block."""

    family: str
    model_types: tuple[str, ...]
    blocks_path: str
    kinds: dict[str, str]
    transposed: bool = False  # Conv1D (GPT-2) stores the weight as (n_in, n_out)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)

    def target_names(self, model: nn.Module, kind: str = "attn_out") -> list[str]:
        """Full module names of the ``kind`` targets, one per block, in depth order (a composite kind: its parts
        block by block)."""
        parts = COMPOSITE_KINDS.get(kind, (kind,))
        for part in parts:
            if part not in self.kinds:
                raise GbdError(f"{self.family} has no target kind {part!r}"
                               + (f" (needed by {kind!r})" if part != kind else "")
                               + f"; choose one of {sorted(self.kinds)} or a composite of them {sorted(COMPOSITE_KINDS)}")
        return [f"{self.blocks_path}.{i}.{self.kinds[part]}" for i in range(len(self.blocks(model))) for part in parts]

    def weight(self, module: nn.Module) -> np.ndarray:
        """W as (n_out, n_in) float64."""
        W = module.weight.detach().to(torch.float64).cpu().numpy()
        return W.T.copy() if self.transposed else W

    @staticmethod
    def bias(module: nn.Module) -> np.ndarray | None:
        b = getattr(module, "bias", None)
        return None if b is None else b.detach().to(torch.float64).cpu().numpy()

    @staticmethod
    def replace(model: nn.Module, name: str, new: nn.Module) -> None:
        """Install ``new`` at the dotted module path ``name``."""
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)

    def block_index(self, name: str) -> int:
        """The index of the block that module ``name`` (a full dotted path, as ``target_names`` gives) lies in."""
        index, _, inside = name.removeprefix(f"{self.blocks_path}.").partition(".")
        if not name.startswith(f"{self.blocks_path}.") or not index.isdigit() or not inside:
            raise GbdError(f"{name!r} is no module inside a block of {self.family} ({self.blocks_path}.N.*)")
        return int(index)

    @staticmethod
    def block_forward(block: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """The residual stream leaving ``block`` called on ``hidden`` with the other arguments the model passes
        it: a decoder layer returns it alone or as the first element of a tuple."""
        out = block(hidden, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("gpt-neox", ("gpt_neox",), "gpt_neox.layers", {
        "attn_out": "attention.dense", "mlp_out": "mlp.dense_4h_to_h",
        "mlp_in": "mlp.dense_h_to_4h", "qkv": "attention.query_key_value"}),
    Adapter("llama", ("llama", "mistral", "qwen2"), "model.layers", {
        "attn_out": "self_attn.o_proj", "mlp_out": "mlp.down_proj", "mlp_in": "mlp.up_proj", "mlp_gate": "mlp.gate_proj",
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj"}),
    Adapter("gpt2", ("gpt2",), "transformer.h", {
        "attn_out": "attn.c_proj", "mlp_out": "mlp.c_proj", "mlp_in": "mlp.c_fc", "qkv": "attn.c_attn"},
        transposed=True),
)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``'s family (from ``config.model_type``), or a clear error."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    known = sorted(t for a in ADAPTERS for t in a.model_types)
    raise GbdError(f"unknown architecture {model_type!r}: gbd-audit has adapters for {known}")
