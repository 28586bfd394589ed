"""`k1 eval`: evaluate models (run), score completions made elsewhere (score), compare runs, list tasks.

k1 eval run runs/demo/student --tasks gsm8k=data/gsm8k.jsonl,kobest_copa=data/kobest_COPA --modes think,non-think
k1 eval run --config recipes/eval.toml
k1 eval score --task mbpp --data data/mbpp.jsonl --reference
k1 eval score --task gsm8k --data data/gsm8k.jsonl --samples answers.jsonl
k1 eval compare runs/eval/a runs/eval/b --out runs/eval/compare
k1 eval tasks
"""

from __future__ import annotations

from pathlib import Path

import typer

from k1.errors import ConfigError

app = typer.Typer(
    help="Evaluate models: math, code, Korean knowledge, tokens spent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _ints(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in _csv(value) or []]
    except ValueError:
        raise ConfigError(f"--k {value!r}: give comma-separated integers, e.g. 1,5") from None


def _limits(base, timeout: float | None, memory_mb: int | None):
    import dataclasses

    changes = {k: v for k, v in (("timeout_s", timeout), ("memory_mb", memory_mb)) if v is not None}
    return dataclasses.replace(base, **changes) if changes else base


@app.command("run")
def run_command(
    model: str = typer.Argument(
        None, help="Model directory or http(s) URL of an OpenAI-compatible endpoint."
    ),
    tasks: list[str] = typer.Option(None, "--tasks", "-t", help="NAME=PATH, comma-separated or repeated."),
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML config (recipes/eval.toml); options override it."
    ),
    modes: str = typer.Option(None, help="think,non-think (math and code tasks). Default: non-think."),
    backend: str = typer.Option(None, help="hf, k1, openai or auto."),
    served_model: str = typer.Option(None, help="Model name at the endpoint."),
    api_key_env: str = typer.Option(None, help="Environment variable holding the endpoint's API key."),
    max_new_tokens: int = typer.Option(None),
    temperature: float = typer.Option(None),
    top_p: float = typer.Option(None),
    n: int = typer.Option(None, help="Samples per problem (maj@n, pass@k)."),
    k: str = typer.Option(None, help="pass@k values, e.g. 1,5."),
    num_fewshot: int = typer.Option(None, help="Few-shot examples for multiple choice."),
    limit: int = typer.Option(None, help="Only the first LIMIT problems of each task."),
    batch_size: int = typer.Option(None),
    workers: int = typer.Option(None, help="Programs run at once in the code sandbox."),
    seed: int = typer.Option(None),
    device: str = typer.Option(None),
    dtype: str = typer.Option(None),
    quantize: str = typer.Option(None, help="k1 backend: int8 weights (measure what they cost)."),
    compile_decode: bool = typer.Option(
        None, "--compile/--no-compile", help="k1 backend: compile decode steps (faster generation after a warm-up)."
    ),
    timeout: float = typer.Option(None, help="Sandbox wall-clock seconds per program."),
    memory_mb: int = typer.Option(None, help="Sandbox address-space limit per program."),
    out: str = typer.Option(None, "--out", "-o", help="Output directory (default runs/eval)."),
    fresh: bool = typer.Option(False, help="Discard samples from an earlier run in --out."),
) -> None:
    """Evaluate a model on tasks; writes results.json, results.md, results.png and samples/ under --out."""
    from k1.evals.run import EvalConfig, load_config, parse_task_args, run

    overrides = dict(
        model=model,
        backend=backend,
        served_model=served_model,
        api_key_env=api_key_env,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        n=n,
        k=_ints(k),
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        device=device,
        dtype=dtype,
        quantize=quantize,
        compile=compile_decode,
        out=out,
        modes=_csv(modes),
    )
    if tasks:
        overrides["tasks"] = parse_task_args(tasks)
    cfg = (
        load_config(config, **overrides)
        if config
        else EvalConfig(**{k: v for k, v in overrides.items() if v is not None})
    )
    cfg.sandbox = _limits(cfg.sandbox, timeout, memory_mb)
    results = run(cfg, fresh=fresh)
    _print(results, Path(cfg.out))


@app.command("score")
def score_command(
    task: str = typer.Option(..., "--task", help="A registered task (see `k1 eval tasks`)."),
    data: str = typer.Option(..., "--data", help="The task's data file."),
    samples: str = typer.Option(
        None, "--samples", help="jsonl of completions: {id, completion | completions}."
    ),
    reference: bool = typer.Option(
        False, "--reference", help="Score the data set's own reference answers/solutions."
    ),
    mode: str = typer.Option("non-think", help="think or non-think (for adherence)."),
    tokenizer: str = typer.Option(None, help="Tokenizer directory to count tokens of completions."),
    k: str = typer.Option(None, help="pass@k values, e.g. 1,5."),
    limit: int = typer.Option(None),
    workers: int = typer.Option(2, help="Programs run at once in the code sandbox."),
    timeout: float = typer.Option(None, help="Sandbox wall-clock seconds per program."),
    memory_mb: int = typer.Option(None),
    option: list[str] = typer.Option(None, "--option", help="Task option KEY=VALUE (e.g. split=test)."),
    out: str = typer.Option(None, "--out", "-o", help="Write results and scored samples here."),
) -> None:
    """Score completions made elsewhere (any model, any server), or check the harness on references."""
    from k1.evals.run import score
    from k1.evals.sandbox import Limits

    options = {}
    for item in option or []:
        if "=" not in item:
            raise ConfigError(f"--option {item!r}: write KEY=VALUE")
        key, value = item.split("=", 1)
        options[key.strip()] = value.strip()
    results = score(
        task,
        data,
        samples,
        reference=reference,
        mode=mode,
        tokenizer=tokenizer,
        ks=tuple(_ints(k) or [1]),
        limits=_limits(Limits(), timeout, memory_mb),
        workers=workers,
        limit=limit,
        options=options,
        out=out,
    )
    _print(results, Path(out) if out else None)


@app.command("compare")
def compare_command(
    results: list[str] = typer.Argument(..., help="results.json files or run directories."),
    out: str = typer.Option("runs/eval/compare", "--out", "-o"),
) -> None:
    """Compare runs: compare.md and compare.png."""
    from k1.evals.report import compare

    path = compare(results, out)
    typer.echo((path / "compare.md").read_text())
    typer.echo(f"wrote {path / 'compare.md'} and {path / 'compare.png'}")


@app.command("tasks")
def tasks_command() -> None:
    """List the registered tasks and the data layout each reads."""
    from k1.evals.tasks import TASKS

    for name, task in TASKS.items():
        options = f" [options: {', '.join(task.options)}]" if task.options else ""
        typer.echo(f"{name:18} {task.kind:5} {task.language}  {task.description}{options}")


def _print(results: dict, out: Path | None) -> None:
    from k1.evals.report import rows

    for r in rows(results):
        score = "–" if r["score"] is None else f"{r['score']:.3f}"
        tokens = "" if r["tokens_per_problem"] is None else f"  {r['tokens_per_problem']:.0f} tok/problem"
        adherence = "" if r["adherence"] is None else f"  adherence {r['adherence']:.2f}"
        missing = f"  ({r['missing']} without samples)" if r.get("missing") else ""
        typer.echo(
            f"{r['task']:18} {r['mode']:13} {r['metric']:8} {score}  n={r['n_problems']}{tokens}{adherence}{missing}"
        )
    if out is not None:
        typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
