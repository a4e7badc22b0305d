"""Inputs of model modules captured block by block, and the residual streams' moments.

``first_block_calls`` runs the model on each row only as far as its first block and keeps that block's call
(hidden states and the other arguments), so a method can then advance residual streams block by block
(``block_with_target_input`` runs one block and captures one submodule's input on the way).
``block_input_moments`` sums the streams entering each block (``second_moments`` of the blocks).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from experiments.errors import GbdError
from experiments.model.adapters import adapter_for
from experiments.model.moments import module_input, second_moments, token_rows


class _Reached(Exception):
    """Raised by the capturing hook to stop the forward pass once the module's input is known."""


@dataclass
class BlockCall:
    """One call of a block by the model: its residual-stream input ``hidden`` (1, T, D) and the other arguments
    (attention mask, position ids / embeddings, ...) the model passed with it."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict


def first_block_calls(model: nn.Module, input_ids: torch.Tensor) -> list[BlockCall]:
    """Per row of ``input_ids`` (n, T), the call of the model's first block; the rest of each forward is skipped."""
    calls: list[BlockCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        rest = dict(kwargs)
        hidden = args[0] if args else rest.pop("hidden_states", None)
        if not isinstance(hidden, torch.Tensor):
            raise GbdError("the first block received no hidden-state tensor")
        calls.append(BlockCall(hidden.detach(), tuple(args[1:]), rest))
        raise _Reached

    device = next(model.parameters()).device
    handle = adapter_for(model).blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for row in input_ids.split(1):
                try:
                    model(row.to(device), use_cache=False)
                except _Reached:
                    pass
    finally:
        handle.remove()
    if len(calls) != len(input_ids):
        raise GbdError("the forward pass never reached the first block")
    return calls


def block_with_target_input(model: nn.Module, block: nn.Module, target: nn.Module, call: BlockCall,
                            hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``block`` on ``hidden`` with ``call``'s other arguments; returns the input of its submodule ``target``
    as a float64 (tokens, n_in) matrix and the block's output."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(token_rows(module_input(args, kwargs)))

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = adapter_for(model).block_forward(block, hidden, call.args, call.kwargs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise GbdError(f"the target was called {len(captured)} times in one block call, expected once")
    return captured[0], out


def block_input_moments(model: nn.Module, input_ids: torch.Tensor,
                        batch_size: int = 1) -> list[torch.Tensor]:
    """H_k = sum_t h_t h_t^T (float64), h the residual stream entering block k, for every block k
    (depth order): ``second_moments`` of the blocks."""
    adapter = adapter_for(model)
    names = [f"{adapter.blocks_path}.{k}" for k in range(len(adapter.blocks(model)))]
    sums = second_moments(model, names, input_ids, batch_size, progress=False)
    return [torch.from_numpy(sums[name]) for name in names]
