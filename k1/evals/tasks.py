"""The task registry: each task is a small object that reads one upstream data layout and writes prompts.

    from k1.evals.tasks import get_task, TASKS
    task = get_task("gsm8k")
    docs = task.load("gsm8k/test.jsonl", limit=100)
    prompt = task.prompt(docs[0], think=True, chat=True)

A task is a `MCQTask`, `MathTask` or `CodeTask` built from a record parser (upstream record ->
doc) and, for generative tasks, prompt templates. Adding a task is one `register(...)` call:

    register(MathTask("my_math", "ko", "My Korean word problems (jsonl: q, a)",
                      parse=lambda where, r: MathDoc(where, field(r, where, "q"), str(field(r, where, "a")))))

Scoring lives beside each family: mcq.py, math.py, code.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from k1.errors import ConfigError, did_you_mean
from k1.evals.data import DataError, field, read_records

# A task run over more documents than this is almost certainly a wrong file.
MAX_DOCS = 1_000_000
# Longest text a task puts in one prompt (a LiveCodeBench statement is a few KB).
MAX_PROMPT_CHARS = 200_000


@dataclass
class Prompt:
    """What a model is asked: chat messages (rendered by the model's own template) or raw text."""

    messages: list[dict] | None = None
    text: str | None = None
    enable_thinking: bool = False
    stop: tuple[str, ...] = ()
    """Stop strings; used for raw-text prompts (a chat model stops at its end-of-turn token)."""


# ---------------------------------------------------------------------------------------------
# Documents


@dataclass
class MCQDoc:
    id: str
    context: str
    choices: list[str]
    """Continuations scored after `context` (with their leading space, if any)."""
    gold: int


@dataclass
class MathDoc:
    id: str
    problem: str
    answer: str
    solution: str | None = None
    """A worked solution that ends in the answer (GSM8K), used as the reference completion."""


@dataclass
class CodeDoc:
    id: str
    statement: str
    """What the model is asked to do (the HumanEval prompt, the MBPP text, the contest problem)."""
    style: str
    """"tests": candidate + test code in one program; "stdio": stdin -> stdout per case;
    "functional": call a method with JSON arguments per case (LiveCodeBench LeetCode problems)."""
    header: str = ""
    """HumanEval: the function signature and docstring the completion continues."""
    setup: str = ""
    """Code placed before the candidate (MBPP test_setup_code, imports)."""
    tests: str = ""
    """Test code placed after the candidate ("tests" style)."""
    entry_point: str = ""
    cases: list[tuple[str, str]] = dc_field(default_factory=list)
    """(input, expected output) for "stdio" / "functional"."""
    starter_code: str = ""
    reference: str | None = None
    """A known-correct solution, as a completion (used by `k1 eval score --reference`)."""
    test_examples: list[str] = dc_field(default_factory=list)
    """Tests shown to the model in the prompt (MBPP)."""


Doc = MCQDoc | MathDoc | CodeDoc
Parser = Callable[[str, dict], Doc]


# ---------------------------------------------------------------------------------------------
# Task families


@dataclass
class Task:
    name: str
    language: str
    """"ko" or "en": the language of the prompts and problems (the report groups Korean tasks)."""
    description: str
    parse: Parser
    options: dict = dc_field(default_factory=dict)
    """Option name -> help; options filter or shape the docs (e.g. MBPP's split)."""
    kind = "task"

    def resolve(self, path: str | Path) -> Path:
        """The data file for `path` (a directory holding an upstream split layout is allowed)."""
        path = Path(path)
        if path.is_dir():
            for name in ("test", "dev", "validation", "val"):
                for ext in (".tsv", ".jsonl", ".json", ".csv", ".jsonl.gz"):
                    if (path / f"{name}{ext}").is_file():
                        return path / f"{name}{ext}"
            raise DataError(
                f"{path}: a directory without a test/dev/validation file; pass the data file itself"
            )
        return path

    def load(self, path: str | Path, limit: int | None = None, **options) -> list[Doc]:
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise ConfigError(
                f"task {self.name}: unknown option {unknown[0]!r}"
                + did_you_mean(unknown[0], list(self.options) or ["(none)"])
            )
        docs: list[Doc] = []
        seen: set[str] = set()
        for where, record in read_records(self.resolve(path)):
            doc = self.parse(where, record)
            if not self.keep(doc, record, options):
                continue
            if doc.id in seen:
                doc.id = (
                    f"{doc.id}@{where.rsplit(':', 1)[-1]}"  # ids must be unique: samples are keyed by them
                )
            seen.add(doc.id)
            docs.append(doc)
            if len(docs) > MAX_DOCS:
                raise DataError(f"{path}: more than {MAX_DOCS} records; is this the right file?")
            if limit is not None and len(docs) >= limit:
                break
        if not docs:
            raise DataError(f"{path}: no records for task {self.name}")
        return docs

    def keep(self, doc: Doc, record: dict, options: dict) -> bool:
        return True


@dataclass
class MCQTask(Task):
    """Multiple choice scored by the log-likelihood of each choice after the context."""

    kind = "mcq"
    fewshot_separator: str = "\n\n"

    def fewshot_pool_path(self, path: str | Path) -> Path | None:
        """For a directory in the upstream layout, few-shot examples come from its train split."""
        path = Path(path)
        if path.is_dir():
            for ext in (".tsv", ".jsonl", ".json", ".csv"):
                if (path / f"train{ext}").is_file():
                    return path / f"train{ext}"
        return None

    def requests(self, doc: MCQDoc, fewshot: list[MCQDoc]) -> list[tuple[str, str]]:
        """(context, continuation) pairs, one per choice; few-shot examples are solved examples."""
        shots = "".join(ex.context + ex.choices[ex.gold] + self.fewshot_separator for ex in fewshot)
        return [(shots + doc.context, choice) for choice in doc.choices]


def pick_fewshot(pool: list[MCQDoc], doc: MCQDoc, k: int, seed: int) -> list[MCQDoc]:
    """k examples from `pool`, never `doc` itself, the same for a given (doc, seed)."""
    if k <= 0 or not pool:
        return []
    rng = random.Random(f"{seed}:{doc.id}")
    candidates = [ex for ex in pool if ex.id != doc.id or ex.context != doc.context]
    return rng.sample(candidates, min(k, len(candidates)))


@dataclass
class MathTask(Task):
    """Math by generation; the final answer is extracted (see extract.py) and compared numerically."""

    kind = "math"

    def prompt(self, doc: MathDoc, think: bool, chat: bool) -> Prompt:
        if self.language == "ko":
            instruction = f"{doc.problem}\n\n단계별로 풀이하고, 최종 답을 \\boxed{{}} 안에 쓰세요."
            text = f"문제: {doc.problem}\n풀이:"
            stop = ("\n\n문제:",)
        else:
            instruction = (
                f"{doc.problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
            )
            text = f"Question: {doc.problem}\nAnswer: Let's think step by step."
            stop = ("\n\nQuestion:",)
        if chat:
            return Prompt(messages=[{"role": "user", "content": _cap(instruction)}], enable_thinking=think)
        return Prompt(text=_cap(text), stop=stop)

    def reference(self, doc: MathDoc) -> str:
        """A completion that states the gold answer the way the data set does."""
        return doc.solution if doc.solution else f"\\boxed{{{doc.answer}}}"


@dataclass
class CodeTask(Task):
    """Code by execution in the sandbox (see code.py, sandbox.py)."""

    kind = "code"

    def prompt(self, doc: CodeDoc, think: bool, chat: bool) -> Prompt:
        ko = self.language == "ko"
        if doc.style == "tests" and doc.header:  # HumanEval: complete the function
            if not chat:
                return Prompt(
                    text=doc.header, stop=("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ")
                )
            body = (
                "다음 Python 함수를 완성하세요. 함수 전체를 ```python 코드 블록으로 답하세요.\n\n"
                if ko
                else "Complete the following Python function. Answer with the whole function in a ```python code block.\n\n"
            ) + f"```python\n{doc.header}```"
        elif doc.style == "tests":  # MBPP: write a function that passes the shown tests
            tests = "\n".join(doc.test_examples)
            if ko:
                body = (
                    f"당신은 Python 전문가입니다. 다음 과제를 해결하세요: {doc.statement}\n"
                    f"코드는 다음 테스트를 통과해야 합니다:\n\n{tests}\n\n함수를 ```python 코드 블록으로 작성하세요."
                )
            else:
                body = (
                    f"You are an expert Python programmer, and here is your task: {doc.statement}\n"
                    f"Your code should pass these tests:\n\n{tests}\n\nWrite the function in a ```python code block."
                )
            if not chat:
                return Prompt(text=_cap(body + "\n```python\n"), stop=("\n```",))
        else:  # contest problem: a program on stdin/stdout, or a method for the given starter code
            if ko:
                head = (
                    "다음 명세에 맞고 모든 테스트를 통과하는 올바른 Python 프로그램을 작성하세요.\n\n"
                    f"문제: {doc.statement}\n\n"
                )
                tail = (
                    "다음 시작 코드를 사용해 풀이를 작성하고, 코드를 구분 기호로 감싸세요.\n"
                    f"```python\n{doc.starter_code}\n```"
                    if doc.starter_code
                    else "표준 입력에서 입력을 읽어 문제를 풀고 답을 표준 출력으로 쓰세요(예제 입력으로 직접 테스트하지 마세요). "
                    "코드를 다음과 같이 구분 기호로 감싸세요.\n```python\n# 여기에 코드를 작성하세요\n```"
                )
            else:
                head = (
                    "You will be given a problem specification; write a correct Python program that matches it "
                    f"and passes all tests.\n\nQuestion: {doc.statement}\n\n"
                )
                tail = (
                    "Use the following starter code for your solution and enclose your code within delimiters.\n"
                    f"```python\n{doc.starter_code}\n```"
                    if doc.starter_code
                    else "Read the inputs from stdin, solve the problem and write the answer to stdout (do not test "
                    "directly on the sample inputs). Enclose your code within delimiters as follows.\n"
                    "```python\n# YOUR CODE HERE\n```"
                )
            body = head + tail
            if not chat:
                return Prompt(text=_cap(body + "\n\n```python\n"), stop=("\n```",))
        return Prompt(messages=[{"role": "user", "content": _cap(body)}], enable_thinking=think)


def _cap(text: str) -> str:
    if len(text) > MAX_PROMPT_CHARS:
        raise DataError(f"a prompt of {len(text)} characters exceeds the limit of {MAX_PROMPT_CHARS}")
    return text


# ---------------------------------------------------------------------------------------------
# Registry

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}" + did_you_mean(name, list(TASKS)))
    return TASKS[name]


# ---------------------------------------------------------------------------------------------
# Parsers for upstream layouts


def _doc_id(where: str, record: dict, *keys: str) -> str:
    for key in keys:
        if record.get(key) not in (None, ""):
            return str(record[key])
    return where.rsplit(":", 1)[-1].rsplit("[", 1)[-1].rstrip("]")


def _int(value, where: str, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: field {name!r} should be an integer, got {value!r}") from None


def _gold(where: str, gold: int, n: int) -> int:
    if not 0 <= gold < n:
        raise DataError(f"{where}: answer index {gold} is out of range for {n} choices")
    return gold


def parse_kobest_boolq(where: str, r: dict) -> MCQDoc:
    # GitHub TSV: ID, Text, Question, Answer (TRUE/FALSE); hub export: paragraph, question, label (0/1)
    text = field(r, where, "Text", "paragraph")
    question = field(r, where, "Question", "question")
    if "Answer" in r:
        answer = str(r["Answer"]).strip().upper()
        if answer not in ("TRUE", "FALSE"):
            raise DataError(f"{where}: field 'Answer' should be TRUE or FALSE, got {r['Answer']!r}")
        gold = int(answer == "TRUE")
    else:
        gold = _int(field(r, where, "label"), where, "label")
    return MCQDoc(
        _doc_id(where, r, "ID", "id"),
        f"{text} 질문: {question} 답변:",
        [" 아니오", " 예"],
        _gold(where, gold, 2),
    )


def parse_kobest_copa(where: str, r: dict) -> MCQDoc:
    # GitHub TSV: ID, sentence, question (원인/결과), 1, 2, Answer (1/2); hub: premise, question, alternative_1/2, label
    premise = str(field(r, where, "sentence", "premise")).strip()
    relation = str(field(r, where, "question")).strip()
    connectors = {"원인": "왜냐하면", "결과": "그래서"}
    if relation not in connectors:
        raise DataError(f"{where}: field 'question' should be 원인 or 결과, got {relation!r}")
    alternatives = [
        str(field(r, where, "1", "alternative_1")).strip(),
        str(field(r, where, "2", "alternative_2")).strip(),
    ]
    gold = (
        _int(r["Answer"], where, "Answer") - 1
        if "Answer" in r
        else _int(field(r, where, "label"), where, "label")
    )
    return MCQDoc(
        _doc_id(where, r, "ID", "id"),
        f"{premise} {connectors[relation]}",
        [" " + a for a in alternatives],
        _gold(where, gold, 2),
    )


def parse_kobest_hellaswag(where: str, r: dict) -> MCQDoc:
    # GitHub TSV: context, choice1..4, label (0-3); hub: context, ending_1..4, label
    context = str(field(r, where, "context")).strip()
    endings = [str(field(r, where, f"choice{i}", f"ending_{i}")).strip() for i in range(1, 5)]
    gold = _int(field(r, where, "label"), where, "label")
    return MCQDoc(_doc_id(where, r, "id", "ID"), context, [" " + e for e in endings], _gold(where, gold, 4))


LETTERS = "ABCDEFGHIJ"


def _lettered(question: str, options: list[str], prefix: str, answer_word: str) -> tuple[str, list[str]]:
    lines = [f"{prefix}{question}".strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + f"\n{answer_word}:", [f" {LETTERS[i]}" for i in range(len(options))]


def _answer_index(where: str, answer, options: list[str], one_based: bool) -> int:
    """An answer given as an index (0- or 1-based), a letter, or the text of the right option."""
    if isinstance(answer, bool):
        raise DataError(f"{where}: answer {answer!r} is not an option index, letter or text")
    if isinstance(answer, int):
        return _gold(where, answer - 1 if one_based else answer, len(options))
    text = str(answer).strip()
    if text.isdigit():
        return _gold(where, int(text) - 1 if one_based else int(text), len(options))
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return LETTERS.index(text.upper())
    if text in options:
        return options.index(text)
    raise DataError(f"{where}: answer {answer!r} is not an option index, letter or one of the options")


def parse_kmmlu(where: str, r: dict) -> MCQDoc:
    # HAERAE-HUB/KMMLU CSV: question, answer (1-4), A, B, C, D, Category, Human Accuracy
    options = [str(field(r, where, letter)).strip() for letter in "ABCD"]
    context, choices = _lettered(str(field(r, where, "question")).strip(), options, "", "정답")
    gold = _answer_index(where, field(r, where, "answer"), options, one_based=True)
    return MCQDoc(_doc_id(where, r, "id", "ID"), context, choices, gold)


def parse_click(where: str, r: dict) -> MCQDoc:
    # CLIcK JSON: id, paragraph, question, choices (4-5 strings), answer (the text of the right choice)
    options = [str(c).strip() for c in field(r, where, "choices", kind=list)]
    if not 2 <= len(options) <= len(LETTERS):
        raise DataError(f"{where}: {len(options)} choices; expected 2 to {len(LETTERS)}")
    paragraph = str(r.get("paragraph") or "").strip()
    prefix = f"{paragraph}\n" if paragraph else ""
    context, choices = _lettered(str(field(r, where, "question")).strip(), options, prefix, "정답")
    gold = _answer_index(where, field(r, where, "answer"), options, one_based=False)
    return MCQDoc(_doc_id(where, r, "id"), context, choices, gold)


def _parse_generic_mcq(answer_word: str) -> Parser:
    def parse(where: str, r: dict) -> MCQDoc:
        options = [str(c).strip() for c in field(r, where, "choices", "options", kind=list)]
        if not 2 <= len(options) <= len(LETTERS):
            raise DataError(f"{where}: {len(options)} choices; expected 2 to {len(LETTERS)}")
        context, choices = _lettered(str(field(r, where, "question")).strip(), options, "", answer_word)
        gold = _answer_index(where, field(r, where, "answer", "label"), options, one_based=False)
        return MCQDoc(_doc_id(where, r, "id"), context, choices, gold)

    return parse


def parse_gsm8k(where: str, r: dict) -> MathDoc:
    question = str(field(r, where, "question")).strip()
    solution = str(field(r, where, "answer"))
    if "####" not in solution:
        raise DataError(f"{where}: GSM8K answer has no '#### <number>' line")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return MathDoc(_doc_id(where, r, "id"), question, answer, solution)


def parse_aime(where: str, r: dict) -> MathDoc:
    # Qwen2.5-Math layout: id, problem, answer ("025"), solution; AIME 2025 sets: problem, answer
    problem = str(field(r, where, "problem", "question")).strip()
    return MathDoc(_doc_id(where, r, "id", "ID"), problem, str(field(r, where, "answer")).strip())


def parse_kor_math(where: str, r: dict) -> MathDoc:
    # xfactlab/kt-ai-challenge kor-D_*: kor_question + answer (kor_answer rationales are unreliable)
    problem = str(field(r, where, "kor_question", "question_ko", "question")).strip()
    return MathDoc(_doc_id(where, r, "id"), problem, str(field(r, where, "answer")).strip())


def parse_math(where: str, r: dict) -> MathDoc:
    problem = str(field(r, where, "problem", "question")).strip()
    return MathDoc(_doc_id(where, r, "id", "unique_id"), problem, str(field(r, where, "answer")).strip())


def parse_humaneval(where: str, r: dict) -> CodeDoc:
    # openai/human-eval: task_id, prompt, canonical_solution, test, entry_point
    header = str(field(r, where, "prompt"))
    entry = str(field(r, where, "entry_point"))
    test = str(field(r, where, "test"))
    canonical = r.get("canonical_solution")
    return CodeDoc(
        _doc_id(where, r, "task_id"),
        header,
        "tests",
        header=header,
        tests=f"{test}\n\ncheck({entry})\n",
        entry_point=entry,
        reference=canonical if isinstance(canonical, str) else None,
    )


def parse_mbpp(where: str, r: dict) -> CodeDoc:
    # full: task_id, text, code, test_list, test_setup_code, challenge_test_list
    # sanitized: task_id, prompt, code, test_imports, test_list
    statement = str(field(r, where, "text", "prompt")).strip()
    tests = [str(t) for t in field(r, where, "test_list", kind=list)]
    setup = "\n".join(str(i) for i in (r.get("test_imports") or []))
    # test_setup_code builds fixtures from the solution's own classes (e.g. Node), so it runs after it
    fixtures = str(r.get("test_setup_code") or "").strip()
    code = r.get("code")
    return CodeDoc(
        _doc_id(where, r, "task_id"),
        statement,
        "tests",
        setup=setup,
        tests=(fixtures + "\n" if fixtures else "") + "\n".join(tests) + "\n",
        reference=code if isinstance(code, str) else None,
        test_examples=tests,
    )


MBPP_SPLITS = {
    "all": (1, 10**9),
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


def _mbpp_keep(doc: CodeDoc, record: dict, options: dict) -> bool:
    split = options.get("split", "all")
    if split not in MBPP_SPLITS:
        raise ConfigError(f"mbpp option split={split!r}" + did_you_mean(split, list(MBPP_SPLITS)))
    low, high = MBPP_SPLITS[split]
    try:
        return low <= int(record.get("task_id", 0)) <= high
    except (TypeError, ValueError):
        return split == "all"


def _lcb_tests(where: str, value, name: str) -> list[dict]:
    """LiveCodeBench test lists: a JSON string, a list, or (private tests) base64(zlib(pickle(json)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    text = value.strip()
    if not text.startswith("["):
        text = _unpack_lcb(where, name, text)
    try:
        tests = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: field {name!r} is not a JSON list of tests ({err.msg})") from None
    if not isinstance(tests, list):
        raise DataError(f"{where}: field {name!r} should hold a list of tests")
    return tests


def _unpack_lcb(where: str, name: str, text: str) -> str:
    import base64
    import pickle
    import zlib

    class _StringsOnly(pickle.Unpickler):
        # The packed tests are a pickled str; refusing every global makes unpickling unable to run code.
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in test data")

    try:
        raw = zlib.decompress(base64.b64decode(text, validate=False), bufsize=1 << 20)
        import io

        value = _StringsOnly(io.BytesIO(raw)).load()
    except Exception as err:
        raise DataError(
            f"{where}: field {name!r} is neither JSON nor packed LiveCodeBench tests ({err})"
        ) from None
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} unpacks to {type(value).__name__}, expected a JSON string")
    return value


def parse_livecodebench(where: str, r: dict) -> CodeDoc:
    # livecodebench/code_generation_lite: question_id, question_title, question_content, starter_code,
    # public_test_cases / private_test_cases (JSON or packed), metadata (JSON: func_name), contest_date
    statement = str(field(r, where, "question_content", "question")).strip()
    tests = _lcb_tests(where, r.get("public_test_cases"), "public_test_cases")
    tests += _lcb_tests(where, r.get("private_test_cases"), "private_test_cases")
    if not tests:
        raise DataError(f"{where}: no test cases (public_test_cases / private_test_cases are empty)")
    cases, functional = [], False
    for i, t in enumerate(tests):
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise DataError(f"{where}: test {i} should be an object with 'input' and 'output'")
        functional |= t.get("testtype") == "functional"
        cases.append((str(t["input"]), str(t["output"])))
    metadata = r.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'metadata' is not valid JSON") from None
    entry = str(metadata.get("func_name", "")) if isinstance(metadata, dict) else ""
    if functional and not entry:
        raise DataError(f"{where}: functional tests need metadata.func_name")
    reference = r.get("solution") or r.get("reference_solution")
    return CodeDoc(
        _doc_id(where, r, "question_id", "id"),
        statement,
        "functional" if functional else "stdio",
        entry_point=entry,
        cases=cases,
        starter_code=str(r.get("starter_code") or ""),
        reference=str(reference) if reference else None,
    )


def _lcb_keep(doc: CodeDoc, record: dict, options: dict) -> bool:
    # Contest-date windows are how LiveCodeBench controls contamination: score problems released
    # after a model's training cutoff.
    date = str(record.get("contest_date") or "")[:10]
    if options.get("after") and (not date or date < str(options["after"])):
        return False
    if options.get("before") and (not date or date >= str(options["before"])):
        return False
    if (
        options.get("difficulty")
        and str(record.get("difficulty", "")).lower() != str(options["difficulty"]).lower()
    ):
        return False
    return True


_LCB_OPTIONS = {
    "after": "keep problems with contest_date >= this (YYYY-MM-DD)",
    "before": "keep problems with contest_date < this (YYYY-MM-DD)",
    "difficulty": "easy, medium or hard",
}


@dataclass
class _MBPPTask(CodeTask):
    def keep(self, doc, record, options):
        return _mbpp_keep(doc, record, options)


@dataclass
class _LCBTask(CodeTask):
    def keep(self, doc, record, options):
        return _lcb_keep(doc, record, options)


for _task in (
    MCQTask(
        "kobest_boolq",
        "ko",
        "KoBEST BoolQ: yes/no reading comprehension (TSV: ID, Text, Question, Answer)",
        parse_kobest_boolq,
    ),
    MCQTask(
        "kobest_copa",
        "ko",
        "KoBEST COPA: cause/effect, 2 choices (TSV: ID, sentence, question, 1, 2, Answer)",
        parse_kobest_copa,
    ),
    MCQTask(
        "kobest_hellaswag",
        "ko",
        "KoBEST HellaSwag: sentence continuation, 4 choices (TSV: context, choice1-4, label)",
        parse_kobest_hellaswag,
    ),
    MCQTask(
        "kmmlu",
        "ko",
        "KMMLU-style Korean knowledge, 4 lettered options (CSV: question, A-D, answer 1-4)",
        parse_kmmlu,
    ),
    MCQTask(
        "click",
        "ko",
        "CLIcK-style Korean culture/language, 4-5 options (JSON: paragraph, question, choices, answer)",
        parse_click,
    ),
    MCQTask(
        "mcq",
        "ko",
        "Generic Korean lettered multiple choice (jsonl: question, choices, answer index/letter/text)",
        _parse_generic_mcq("정답"),
    ),
    MCQTask(
        "mcq_en",
        "en",
        "Generic English lettered multiple choice (jsonl: question, choices, answer)",
        _parse_generic_mcq("Answer"),
    ),
    MathTask("gsm8k", "en", "GSM8K grade-school math (jsonl: question, answer with '#### n')", parse_gsm8k),
    MathTask(
        "aime", "en", "AIME competition math, integer answers 0-999 (jsonl: problem, answer)", parse_aime
    ),
    MathTask(
        "kor_math",
        "ko",
        "Korean word problems (jsonl: kor_question, answer), e.g. translated AddSub/MultiArith/SingleEq",
        parse_kor_math,
    ),
    MathTask("math", "en", "Generic math (jsonl: problem or question, answer)", parse_math),
    MathTask("math_ko", "ko", "Generic Korean math (jsonl: problem or question, answer)", parse_math),
    CodeTask(
        "humaneval",
        "en",
        "HumanEval: complete a function, run its check() (jsonl: task_id, prompt, test, entry_point)",
        parse_humaneval,
    ),
    _MBPPTask(
        "mbpp",
        "en",
        "MBPP full (jsonl) or sanitized (json): write a function passing asserts",
        parse_mbpp,
        options={"split": "all, prompt (1-10), test (11-510), validation (511-600), train (601-974)"},
    ),
    _LCBTask(
        "livecodebench",
        "en",
        "LiveCodeBench code generation: stdin/stdout or LeetCode-style functional tests",
        parse_livecodebench,
        options=dict(_LCB_OPTIONS),
    ),
    _LCBTask(
        "livecodebench_ko",
        "ko",
        "LiveCodeBench with Korean statements and Korean instructions (same layout)",
        parse_livecodebench,
        options=dict(_LCB_OPTIONS),
    ),
):
    register(_task)
