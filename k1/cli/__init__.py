"""The `k1` command: one subcommand per pipeline stage, each a thin layer over the library.

Each stage's command lives in `k1/cli/<stage>.py` and exposes either `app` (a command group such as
`k1 tokenizer train`) or `command` (a single command such as `k1 train CONFIG`). Stages whose module
is not present are simply not offered.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import sys

import typer

from k1.errors import K1Error

# (subcommand, module, one-line help) in pipeline order: `k1 --help` reads like the pipeline.
STAGES: list[tuple[str, str, str]] = [
    ("data", "k1.cli.data", "Curate a corpus: read, filter, dedup, scrub PII, tokenize into shards."),
    ("tokenizer", "k1.cli.tokenizer", "Train a Korean-first byte-level BPE tokenizer and measure it."),
    ("model", "k1.cli.model", "Inspect A.X K1 architectures: presets, parameter counts, memory, FLOPs."),
    ("train", "k1.cli.train", "Pretrain a k1 model from token shards."),
    ("plan", "k1.cli.plan", "Estimate FLOPs, memory and time to train and serve a config on a cluster."),
    ("sft", "k1.cli.sft", "Think / Non-Think supervised fine-tuning on chat data."),
    ("synth", "k1.cli.synth", "Generate Korean reasoning tasks with verifiable answers."),
    ("distill", "k1.cli.distill", "Distill a teacher (k1, transformers or an endpoint) into a student."),
    ("eval", "k1.cli.eval", "Evaluate models: math, code, Korean knowledge, tokens spent."),
    ("chat", "k1.cli.chat", "Chat with a model in the terminal."),
    ("serve", "k1.cli.serve", "Serve a model behind an OpenAI-compatible, access-controlled API."),
    ("keys", "k1.cli.keys", "Create, list and revoke API keys for `k1 serve`."),
    ("audit", "k1.cli.audit", "Verify a server's hash-chained audit log."),
    ("demo", "k1.cli.demo", "Run the whole A.X K1 pipeline end to end at toy scale."),
]

app = typer.Typer(
    name="k1",
    help="k1: a Korean-first LLM stack after SK Telecom's A.X K1.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    for name, module_name, help_text in STAGES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, "app"):
            app.add_typer(module.app, name=name, help=help_text)
        else:
            app.command(name=name, help=help_text)(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except K1Error as err:
        print(f"k1: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("k1: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            print(
                f"k1: error: no space left on the device while writing {err.filename or ''}".rstrip(),
                file=sys.stderr,
            )
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            print(
                f"k1: error: no permission to write {err.filename or 'the output'}: choose another --out",
                file=sys.stderr,
            )
        else:
            raise
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as err:
        # Usage errors (bad option, missing argument, bare `k1`) arrive here in non-standalone
        # mode. Typer bundles its own copy of click, so match on the behaviour, not the class.
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            print("k1: aborted", file=sys.stderr)
            sys.exit(130)
        raise
