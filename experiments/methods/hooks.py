"""Streamed input statistics of model modules, with some modules temporarily swapped for others.

``module_inputs`` runs the model on one batch only as far as a module's input (the forward is stopped there),
so collecting a statistic for layer l costs a forward through blocks 1..l, not through the whole model.
``swapped`` installs replacement modules (e.g. already-compressed layers) and always restores the originals.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from torch import nn

from experiments.adapters import adapter_for
from experiments.errors import GbdError


class _Reached(Exception):
    """Raised by the capturing hook to stop the forward pass once the module's input is known."""


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        raise GbdError("a captured module received no tensor input")
    return x


def module_inputs(model: nn.Module, name: str, input_ids: torch.Tensor) -> torch.Tensor:
    """The input of module ``name`` on ``input_ids`` as a float64 (tokens, n_in) matrix; the rest of the
    forward pass is skipped."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = _first_input(args, kwargs)
        captured.append(x.detach().reshape(-1, x.shape[-1]).to(torch.float64))
        raise _Reached

    device = next(model.parameters()).device
    handle = model.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids.to(device), use_cache=False)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise GbdError(f"the forward pass never reached module {name}")
    return captured[0]


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
