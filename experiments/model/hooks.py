"""Streamed input statistics of model modules, with some modules temporarily swapped for others.

``first_block_calls`` runs the model on each row only as far as its first block and keeps that block's call
(hidden states and the other arguments), so a method can then advance residual streams block by block
(``block_with_target_input`` runs one block and captures one submodule's input on the way).
``swapped`` installs replacement modules (e.g. already-compressed layers) and always restores the originals.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from torch import nn

from experiments.errors import GbdError
from experiments.model.adapters import adapter_for


class _Reached(Exception):
    """Raised by the capturing hook to stop the forward pass once the module's input is known."""


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        raise GbdError("a captured module received no tensor input")
    return x


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
        x = _first_input(args, kwargs)
        captured.append(x.detach().reshape(-1, x.shape[-1]).to(torch.float64))

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = adapter_for(model).block_forward(block, hidden, call.args, call.kwargs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise GbdError(f"the target was called {len(captured)} times in one block call, expected once")
    return captured[0], out


@contextmanager
def swapped(model: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """Install ``replacements`` (module name -> module) for the duration, then put the originals back."""
    adapter = adapter_for(model)
    originals = {name: model.get_submodule(name) for name in replacements}
    try:
        for name, module in replacements.items():
            adapter.replace(model, name, module)
        yield
    finally:
        for name, module in originals.items():
            adapter.replace(model, name, module)


def block_input_moments(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 1) -> list[torch.Tensor]:
    """H_k = sum_t h_t h_t^T (float64), h the residual stream entering block k, for every block k (depth order)."""
    adapter = adapter_for(model)
    n_blocks = len(adapter.blocks(model))
    sums: list[torch.Tensor | None] = [None] * n_blocks

    def adder(k: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = _first_input(args, kwargs)
            h = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
            sums[k] = h.T @ h if sums[k] is None else sums[k] + h.T @ h
        return hook

    blocks = adapter.blocks(model)
    handles = [blocks[k].register_forward_pre_hook(adder(k), with_kwargs=True) for k in range(n_blocks)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                model(input_ids[start:start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if any(s is None for s in sums):
        raise GbdError("calibration never reached every block")
    return [s.cpu() for s in sums]
