"""An lm-eval model class that scores the requests sharing one context in one packed row (``hf-packed``).

A multiple-choice task (HellaSwag: four endings) sends lm-eval's ``_loglikelihood_tokens`` one request
(context c, continuation e_j) per choice, and HFLM feeds each as its own row c + e_j[:-1], so the context is
run once per choice. ``PackedHFLM`` groups the requests by their context tokens c_1..c_m and feeds one row

    c_1 .. c_m | e_1^1 .. e_1^{n_1 - 1} | ... | e_K^1 .. e_K^{n_K - 1}     (a continuation's last token is
                                                                            never an input)

with position ids 0..m-1 for the context and m..m+n_j-2 for continuation j, and a 4-D attention mask in which
a context token attends to the earlier context tokens and a token of continuation j to the whole context and
the earlier tokens of continuation j only (never another continuation). Every logit is therefore the one HFLM
computes for the same prefix, and

    log p(e_j | c) = sum_t log softmax(z_{pos(j, t)})[e_j^t],   pos(j, 1) = m (the last context token),
                                                                pos(j, t) = the row position of e_j^{t-1},

with lm-eval's greedy flag: argmax z_{pos(j, t)} == e_j^t for every t. Everything else (task, prompts,
tokenization of the pairs, metrics) stays lm-eval's: only the model call is changed. A group whose packed row
would exceed the model's context, a seq2seq model or ``batch_size="auto"`` is scored by HFLM's own code.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from experiments.errors import GbdError

Request = tuple[tuple[str, str], list[int], list[int]]  # ((context, continuation) strings, context ids, cont ids)
MODEL_NAME = "hf-packed"


def packed_row(context: Sequence[int], continuations: Sequence[Sequence[int]]
               ) -> tuple[list[int], list[int], list[int], list[list[int]]]:
    """(tokens, position ids, block id per token (-1: context), logit positions per continuation) of one row."""
    m = len(context)
    tokens, positions, blocks = list(context), list(range(m)), [-1] * m
    read_at: list[list[int]] = []
    for j, cont in enumerate(continuations):
        start = len(tokens)
        read_at.append([m - 1] + list(range(start, start + len(cont) - 1)))
        tokens += cont[:-1]
        positions += range(m, m + len(cont) - 1)
        blocks += [j] * (len(cont) - 1)
    return tokens, positions, blocks, read_at


def packed_mask(blocks: Sequence[Sequence[int]], width: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (batch, 1, width, width) mask: 0 where query q may attend key k, dtype's min elsewhere.

    q attends k iff k <= q and (k is context or k is in q's block); padding (beyond a row) attends itself only.
    """
    allowed = torch.zeros(len(blocks), width, width, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for row, block in enumerate(blocks):
        b = torch.tensor(block, dtype=torch.long)
        n = b.numel()
        same_or_context = (b[None, :] == -1) | (b[None, :] == b[:, None])
        allowed[row, :n, :n] = same_or_context & causal[:n, :n]
        allowed[row, range(n, width), range(n, width)] = True
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@register_model(MODEL_NAME)
class PackedHFLM(HFLM):
    """HFLM whose loglikelihood scores each request group's shared context once (module docstring)."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        longest = max((len(continuation) for _, _, continuation in requests), default=0)
        if longest > self.max_length:     # HFLM would stop on a bare assertion
            raise GbdError(f"an answer of {longest} tokens is longer than the model's context ({self.max_length} "
                           "tokens): lm-eval cannot score it; evaluate a model with a longer context")
        if self.backend != "causal" or not isinstance(self.batch_size, int):
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, (_, context, _) in enumerate(requests):
            groups[tuple(context)].append(index)
        packable, too_long = [], []
        for context, members in groups.items():
            length = len(context) + sum(len(requests[i][2]) - 1 for i in members)
            (packable if length <= self.max_length else too_long).append((length, context, members))
        results: dict[int, tuple[float, bool]] = {}
        if too_long:
            indices = [i for _, _, members in too_long for i in members]
            for i, answer in zip(indices, super()._loglikelihood_tokens(
                    [requests[i] for i in indices], disable_tqdm, override_bs)):
                results[i] = answer
        packable.sort(key=lambda g: -g[0])  # longest first, like HFLM: padding stays small
        for start in range(0, len(packable), max(1, self.batch_size)):
            self._score_packed(requests, packable[start:start + max(1, self.batch_size)], results)
        return [results[i] for i in range(len(requests))]

    def _score_packed(self, requests: list[Request], batch: list[tuple[int, tuple[int, ...], list[int]]],
                      results: dict[int, tuple[float, bool]]) -> None:
        """Score the groups of one batch (one packed row each) and store (log p, is greedy) per request."""
        rows = [packed_row(context, [requests[i][2] for i in members]) for _, context, members in batch]
        width = max(len(tokens) for tokens, _, _, _ in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        position_ids = torch.zeros(len(rows), width, dtype=torch.long)
        for r, (tokens, positions, _, _) in enumerate(rows):
            input_ids[r, :len(tokens)] = torch.tensor(tokens)
            position_ids[r, :len(positions)] = torch.tensor(positions)
        mask = packed_mask([blocks for _, _, blocks, _ in rows], width, self.model.dtype)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=position_ids.to(self.device), use_cache=False).logits
        for r, (_, _, members) in enumerate(batch):
            for i, read_at in zip(members, rows[r][3]):
                (request_str, _, cont) = requests[i]
                z = logits[r, read_at]
                logprobs = F.log_softmax(z, dim=-1, dtype=self.softmax_dtype)
                target = torch.tensor(cont, device=z.device)
                answer = (float(logprobs.gather(1, target[:, None]).sum()), bool((z.argmax(-1) == target).all()))
                results[i] = answer
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
