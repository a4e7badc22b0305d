"""Evaluation of a model as it is (torch, lm-evaluation-harness): ``perplexity`` (WikiText-2, the SVD-LLM
protocol), ``hellaswag`` (lm-eval's task, its local copy as YAML data, and a direct cross-check scorer),
``lm_eval_packed`` (an lm-eval model that scores each context once), ``unigram`` (the floor a model without
context reaches)."""
