"""Evaluation: benchmarks, judges, engines, metrics with bootstrap CIs, resumable runs.

Python entry points (the CLI ``r1probe eval`` wraps these):

- :func:`r1probe.eval.api.refusal_rate` — refusal rate of a model (optionally steered) on a prompt list.
- :func:`r1probe.eval.api.gsm8k_accuracy`, :func:`r1probe.eval.api.gsm8k_nll` — reasoning retention.
- :func:`r1probe.eval.runner.evaluate` / :func:`r1probe.eval.runner.run_bench` — full benchmark runs.
"""
