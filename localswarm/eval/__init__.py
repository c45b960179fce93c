"""Evaluation harness: does the vote choose better than chance, and at what cost?

``python -m localswarm.eval humaneval`` samples N answers per HumanEval problem from
real llama-server instances (or any OpenAI-compatible server), runs each in a sandbox
(``sandbox``), votes with ``localswarm.consensus`` and writes ``docs/consensus.md``.
Modules: ``codegen`` (problems, prompt, reply -> program), ``sandbox``, ``sampling``,
``metrics`` (pass@k, selection efficiency, AUROC), ``report``, ``humaneval`` (CLI).
"""
