"""Evaluation: math, code, Korean knowledge, and the tokens each answer costs.

    k1 eval run MODEL_DIR_OR_URL --tasks gsm8k=FILE,kobest_copa=DIR --modes think,non-think
    k1 eval score --task mbpp --data mbpp.jsonl --reference

    from k1.evals.run import EvalConfig, TaskSpec, run, score

Modules, in the order a run uses them:
  data.py     readers for the upstream file layouts (errors name file and line)
  tasks.py    the task registry: upstream record -> document, prompts
  models.py   backends behind one protocol: hf (transformers dirs, k1 dirs), k1 (native), openai (endpoints)
  extract.py  reasoning split, final-answer extraction and comparison, code blocks
  sandbox.py  running model-written programs with OS and Python-level limits
  mcq.py, math.py, code.py   scoring per task family
  metrics.py  pass@k, majority vote, tokens spent, mode adherence
  run.py      configs, resumable runs, scoring completions made elsewhere
  report.py   results.json, results.md, PNG comparisons

See docs/evals.md.
"""
