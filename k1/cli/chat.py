"""`k1 chat MODEL_DIR`: talk to a model in the terminal, streaming, with /think and /nothink."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    model_dir: Path = typer.Argument(
        ..., help="A k1 model directory (with tokenizer files, as `k1 sft` writes)."
    ),
    tokenizer: Path = typer.Option(
        None, "--tokenizer", help="Tokenizer directory, if the model dir has none."
    ),
    think: bool = typer.Option(True, "--think/--no-think", help="Start in think or non-think mode."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Longest reply in tokens."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 is greedy."),
    top_p: float = typer.Option(0.9, "--top-p"),
    top_k: int = typer.Option(0, "--top-k", help="0 keeps all tokens."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (each reply starts from it)."),
    system: str = typer.Option("", "--system", help="System message."),
    context: int = typer.Option(0, "--context", help="Context length in tokens (0: the model's)."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)."),
    quantize: str = typer.Option("", "--quantize", help="int8: weight-only int8 (half the weight memory)."),
    compile_decode: bool = typer.Option(
        False, "--compile", help="Compile decode steps with torch.compile: faster replies after a first one "
        "that waits some tens of seconds (needs a C++ compiler; without one, chat warns and runs uncompiled)."
    ),
):
    """Chat with a model: tokens stream as they come; Ctrl-C stops a reply, Ctrl-D leaves."""
    import torch

    import k1
    from k1 import tokenizer as tokenizer_mod
    from k1.chat import Chat, ChatSettings, terminal
    from k1.errors import K1Error

    if threads:
        torch.set_num_threads(threads)
    if max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise K1Error("need --max-new-tokens >= 1, --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0")
    if not Path(model_dir).is_dir():
        raise K1Error(f"{model_dir}: no such model directory")
    tok_dir = tokenizer or model_dir
    if not (Path(tok_dir) / "tokenizer.json").is_file():
        raise K1Error(f"{tok_dir}: no tokenizer files; pass --tokenizer DIR")
    tok = tokenizer_mod.load(tok_dir)
    model = k1.load(model_dir, quantize=quantize or None).eval()
    if compile_decode:
        model.compile_decode()
    settings = ChatSettings(
        think=think,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        system=system,
        context=context,
    )
    with torch.inference_mode():
        terminal(Chat(model, tok, settings))
