"""Sequence-level distillation: the teacher answers, a verifier checks, the shortest correct answer stays.

    k1 distill generate recipes/distill_seq_demo.toml    # resumable: run it again after a stop

For every prompt, the teacher answers `samples` times in each mode (think: reasoning then answer;
non-think: the answer alone). Each answer is checked where a verifier exists (an integer answer:
math; unit tests: code) and must keep to its mode (a think answer closes its reasoning; a
non-think answer shows no worked steps). Of the answers that pass, the shortest (in teacher
tokens) is kept per prompt and mode, so the student learns to reach the right answer with fewer
tokens. Works across tokenizers: the output is text.

Output, under `<out_dir>/sequence/`:

    generations.jsonl   every answer, appended as it arrives, keyed "id|mode|sample": the resume point
    sft.jsonl           the kept answers as chat `messages` (reasoning in `reasoning_content` for think
                        mode), ready for `k1 sft` / the "chat" data format, or any trainer that reads
                        OpenAI-style messages
    report.json         per mode: answered, adherent, correct, prompts solved, mean tokens of all
                        correct answers vs of the kept ones
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k1.distill.config import DistillConfig, GenerateConfig
from k1.distill.teachers import GenRequest, GenResult, Teacher, load_teacher
from k1.errors import ConfigError, K1Error, did_you_mean

GENERATIONS = "generations.jsonl"
SFT_FILE = "sft.jsonl"
REPORT = "report.json"
MAX_PROMPTS = 1_000_000
MAX_RECORD_CHARS = 1_000_000
# What the code verifier may use per test run (POSIX rlimits): address space, open files, file size.
CODE_MEMORY_BYTES = 1 << 30
CODE_MAX_FILES = 64
CODE_MAX_FILE_BYTES = 16 << 20


@dataclass
class Prompt:
    id: str
    messages: list[dict]
    """The conversation up to and including the last user message."""
    answer: int | None = None
    """Gold integer answer (math verifier)."""
    tests: list[str] = field(default_factory=list)
    """Python statements that must run without error after the answer's code (code verifier)."""
    meta: dict = field(default_factory=dict)


def _gold_int(value) -> int | None:
    from k1.thinking import extract_int

    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        tail = value.split("####")[-1]  # GSM8K writes "... #### 72"
        return extract_int(tail)
    return None


def _prompt_from_record(rec, where: str, index: int) -> Prompt:
    if not isinstance(rec, dict):
        raise K1Error(f"{where}: expected an object with messages or question")
    pid = str(rec.get("id", rec.get("task_id", index)))
    if isinstance(rec.get("messages"), list) and rec["messages"]:
        msgs = [dict(m) for m in rec["messages"] if isinstance(m, dict)]
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
        if last_user < 0:
            raise K1Error(f"{where}: messages have no user turn")
        msgs = msgs[: last_user + 1]
    else:
        q = next((rec[k] for k in ("question", "prompt", "text") if isinstance(rec.get(k), str)), None)
        if not q:
            raise K1Error(f"{where}: no 'messages' and no 'question' / 'prompt' / 'text' field")
        msgs = [{"role": "user", "content": q}]
    tests = rec.get("tests", rec.get("test_list")) or []
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise K1Error(f"{where}: 'tests' must be a list of Python statements")
    meta = {k: rec[k] for k in ("level", "task") if k in rec}
    return Prompt(pid, msgs, _gold_int(rec.get("answer")), tests, meta)


def load_prompts(g: GenerateConfig, source: str = "config") -> list[Prompt]:
    """Prompts from k1.synth (synth:<task>) or a jsonl file."""
    if g.prompts.startswith("synth:"):
        from k1 import synth

        task = g.prompts.split(":", 1)[1]
        if task not in synth.TASKS:
            raise ConfigError(
                f"{source}: generate.prompts {g.prompts!r}{did_you_mean(task, list(synth.TASKS))}"
            )
        records = synth.TASKS[task](g.n, seed=g.seed, levels=g.levels, split="train")
        return [_prompt_from_record(r, f"synth:{task}[{i}]", i) for i, r in enumerate(records)]
    path = Path(g.prompts)
    if not path.is_file():
        raise K1Error(f"{path}: prompts file not found (generate.prompts: a .jsonl file or synth:<task>)")
    out, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if len(line) > MAX_RECORD_CHARS:
                raise K1Error(f"{path}:{n}: record longer than {MAX_RECORD_CHARS:,} characters")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise K1Error(f"{path}:{n}: not valid JSON ({err.msg})") from None
            p = _prompt_from_record(rec, f"{path}:{n}", n)
            if p.id in seen:
                raise K1Error(f"{path}:{n}: prompt id {p.id!r} appears twice (ids key the resumable output)")
            seen.add(p.id)
            out.append(p)
            if len(out) > MAX_PROMPTS:
                raise K1Error(f"{path}: more than {MAX_PROMPTS:,} prompts; split the file")
    if not out:
        raise K1Error(f"{path}: no prompts")
    return out


# ------------------------------------------------------------------------------------- verifiers


def verify_math(prompt: Prompt, result: GenResult, timeout_s: float = 0.0) -> bool:
    """The final answer's integer (after "정답:", else the last number) equals the gold answer."""
    from k1.thinking import extract_int

    return prompt.answer is not None and result.closed and extract_int(result.answer) == prompt.answer


_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def _limit_resources() -> None:  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CODE_MEMORY_BYTES, CODE_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (CODE_MAX_FILES, CODE_MAX_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (CODE_MAX_FILE_BYTES, CODE_MAX_FILE_BYTES))


def verify_code(prompt: Prompt, result: GenResult, timeout_s: float = 5.0) -> bool:
    """The answer's code (its last ```python block, else all of it) followed by the prompt's tests
    runs without error in a separate, isolated Python process with a time, memory and file limit.
    This keeps honest mistakes contained; it is not a sandbox against hostile code."""
    if not prompt.tests or not result.closed:
        return False
    blocks = _CODE_BLOCK.findall(result.answer)
    code = blocks[-1] if blocks else result.answer
    program = code + "\n\n" + "\n".join(prompt.tests) + "\n"
    with tempfile.TemporaryDirectory(prefix="k1-verify-") as tmp:
        script = Path(tmp) / "check.py"
        script.write_text(program, encoding="utf-8")
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(script)],
                cwd=tmp,
                capture_output=True,
                timeout=timeout_s,
                env={"PATH": os.environ.get("PATH", "")},
                preexec_fn=_limit_resources if os.name == "posix" else None,
            )
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0


def verify_none(prompt: Prompt, result: GenResult, timeout_s: float = 0.0) -> bool:
    """No check: every answer that keeps to its mode counts (the shortest is still kept)."""
    return result.closed


VERIFIERS: dict[str, Callable[[Prompt, GenResult, float], bool]] = {
    "math": verify_math,
    "code": verify_code,
    "none": verify_none,
}


def verifier_for(name: str, prompt: Prompt) -> str:
    if name != "auto":
        if name not in VERIFIERS:
            raise ConfigError(f"generate.verifier {name!r}{did_you_mean(name, ['auto', *VERIFIERS])}")
        return name
    if prompt.tests:
        return "code"
    return "math" if prompt.answer is not None else "none"


def keeps_mode(result: GenResult, think: bool) -> bool:
    """A think answer closed a non-empty reasoning block and answered; a non-think answer has no
    reasoning and shows no worked steps (k1.thinking's adherence rule)."""
    from k1.thinking import shows_work

    if think:
        return result.closed and bool(result.reasoning) and bool(result.answer.strip())
    return not result.reasoning and bool(result.answer.strip()) and not shows_work(result.answer)


# ------------------------------------------------------------------------------------- generating


def _key(pid: str, mode: str, sample: int) -> str:
    return f"{pid}|{mode}|{sample}"


def read_generations(path: Path) -> dict[str, dict]:
    """Finished answers by key; a line cut by a kill is skipped (and generated again)."""
    done: dict[str, dict] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "key" in rec:
                    done[rec["key"]] = rec
    return done


def generate(cfg: DistillConfig, teacher: Teacher | None = None, progress: bool = True) -> dict:
    """Teacher answers for every prompt, mode and sample (skipping those already in generations.jsonl),
    then verification and selection; returns the report."""
    g = cfg.generate
    out = Path(cfg.out_dir) / "sequence"
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(g, cfg.source)
    gen_path = out / GENERATIONS
    done = read_generations(gen_path)
    jobs = [
        (p, mode, s)
        for s in range(g.samples)
        for mode in g.modes
        for p in prompts
        if _key(p.id, mode, s) not in done
    ]
    t0 = time.perf_counter()
    if jobs:
        teacher = teacher or load_teacher(cfg.teacher)
        # One seed per sample index: a local teacher batches all prompts of a round together.
        requests = [
            GenRequest(
                p.messages, mode == "think", g.max_new_tokens, g.temperature, g.top_p, g.seed * 7919 + s
            )
            for p, mode, s in jobs
        ]
        shown = {"n": 0, "t": 0.0}
        with open(gen_path, "a", encoding="utf-8") as f:

            def on_result(i: int, r: GenResult) -> None:
                p, mode, s = jobs[i]
                rec = {
                    "key": _key(p.id, mode, s),
                    "id": p.id,
                    "mode": mode,
                    "sample": s,
                    "reasoning": r.reasoning,
                    "answer": r.answer,
                    "closed": r.closed,
                    "tokens": r.tokens,
                    "finish_reason": r.finish_reason,
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                done[rec["key"]] = rec
                shown["n"] += 1
                if progress and (time.perf_counter() - shown["t"] > 10 or shown["n"] == len(jobs)):
                    shown["t"] = time.perf_counter()
                    print(f"generate: {shown['n']}/{len(jobs)} answers", file=sys.stderr, flush=True)

            teacher.complete(requests, on_result, batch_size=g.batch_size)
    records, report = select(prompts, done, g)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["teacher"] = teacher.describe() if teacher is not None else None
    _write_jsonl(out / SFT_FILE, records)
    tmp = out / f".{REPORT}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / REPORT)
    return report


def _result(rec: dict) -> GenResult:
    return GenResult(
        rec.get("reasoning"),
        rec.get("answer") or "",
        bool(rec.get("closed")),
        int(rec.get("tokens") or 0),
        rec.get("finish_reason") or "",
    )


def select(prompts: list[Prompt], generations: dict[str, dict], g: GenerateConfig) -> tuple[list[dict], dict]:
    """The shortest verified answer per prompt (and mode, with select = "per_mode") as SFT records,
    and per-mode counts."""
    records = []
    stats = {
        m: {
            "answers": 0,
            "keep_mode": 0,
            "correct": 0,
            "prompts": 0,
            "prompts_solved": 0,
            "correct_tokens": 0,
            "kept_tokens": 0,
        }
        for m in g.modes
    }
    verifiers: dict[str, int] = {}
    for p in prompts:
        vname = verifier_for(g.verifier, p)
        verifiers[vname] = verifiers.get(vname, 0) + 1
        check = VERIFIERS[vname]
        passing: list[tuple[int, int, str, GenResult]] = []  # (tokens, sample, mode, result)
        for mode in g.modes:
            st = stats[mode]
            st["prompts"] += 1
            solved = False
            for s in range(g.samples):
                rec = generations.get(_key(p.id, mode, s))
                if rec is None:
                    continue
                r = _result(rec)
                st["answers"] += 1
                if not keeps_mode(r, mode == "think"):
                    continue
                st["keep_mode"] += 1
                if not check(p, r, g.code_timeout_s):
                    continue
                st["correct"] += 1
                st["correct_tokens"] += r.tokens
                solved = True
                passing.append((r.tokens, s, mode, r))
            st["prompts_solved"] += solved
        groups = [[x for x in passing if x[2] == m] for m in g.modes] if g.select == "per_mode" else [passing]
        for group in groups:
            if not group:
                continue
            tokens, s, mode, r = min(group, key=lambda x: (x[0], x[1], x[2]))
            reply = {"role": "assistant", "content": r.answer}
            if mode == "think":
                reply["reasoning_content"] = r.reasoning
            records.append(
                {
                    "id": f"{p.id}/{mode}",
                    "source_id": p.id,
                    "mode": mode,
                    "teacher_tokens": tokens,
                    "sample": s,
                    "messages": [*p.messages, reply],
                    **p.meta,
                }
            )
            stats[mode]["kept_tokens"] += tokens
            stats[mode].setdefault("kept", 0)
            stats[mode]["kept"] += 1
    for st in stats.values():
        kept = st.get("kept", 0)
        st["kept"] = kept
        st["mean_tokens_correct"] = (
            round(st.pop("correct_tokens") / st["correct"], 2) if st["correct"] else None
        )
        st["mean_tokens_kept"] = round(st.pop("kept_tokens") / kept, 2) if kept else None
    return records, {"modes": stats, "verifiers": verifiers, "records": len(records), "select": g.select}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
