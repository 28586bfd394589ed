"""Generated Korean reasoning tasks with verifiable answers: data that k1 makes itself.

Think / Non-Think post-training needs problems whose answers can be checked and whose solutions
can be written out step by step. `arithmetic` writes Korean word problems (사과, 버스 승객, 용돈,
넓이, 물건 값...) at four levels, each with a reasoning trace (one computation per line) and the
final answer line `정답: 17개`:

    level 1  one addition or subtraction, numbers up to 50
    level 2  one multiplication or exact division, or 3-digit addition / subtraction
    level 3  two steps (e.g. weekly allowance x weeks - spending)
    level 4  three or four steps (e.g. two purchases, paid with a bill: the change)

    k1 synth arithmetic --n 1000 --seed 0 --level 1..4 --out runs/synth/train.jsonl
    k1 synth arithmetic --n 200 --seed 1 --level 1..4 --split test --out runs/synth/test.jsonl

    from k1 import synth
    records = synth.arithmetic(1000, seed=0, levels=(1, 2, 3, 4), split="train")
    records[0]["question"], records[0]["reasoning"], records[0]["answer"], records[0]["messages"]

Output is a pure function of (n, seed, levels, split). Every problem is identified by its template
and numbers (names do not count), and that identity is hashed to a split: the `test` split never
contains a problem of the `train` split, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from k1.errors import K1Error

# Share of the problem space (by template + numbers) reserved for held-out evaluation.
TEST_SHARE = 0.1
SPLITS = ("train", "test")
LEVELS = (1, 2, 3, 4)
# A single call may not ask for more than this many problems (a typo should not fill the disk).
MAX_PROBLEMS = 1_000_000

NAMES = (
    "민수",
    "지영",
    "서연",
    "하준",
    "도윤",
    "수아",
    "지호",
    "예준",
    "하은",
    "윤서",
    "준호",
    "유나",
    "현우",
    "소희",
)
FRUITS = (("사과", "개"), ("귤", "개"), ("배", "개"), ("복숭아", "개"), ("딸기", "개"))
STATIONERY = (
    ("연필", "자루", 200, 900, 50),
    ("공책", "권", 800, 2500, 100),
    ("지우개", "개", 300, 1000, 50),
    ("색종이", "묶음", 500, 1500, 100),
    ("볼펜", "자루", 500, 1500, 100),
)

EQUATION = re.compile(r"(\d+) ([+\-×÷]) (\d+) = (\d+)")
ANSWER_LINE = "정답: {answer}{unit}"


def has_batchim(word: str) -> bool:
    """Does the last syllable end in a consonant (받침)? Chooses 은/는, 이/가, 을/를."""
    ch = word[-1]
    if "가" <= ch <= "힣":
        return (ord(ch) - 0xAC00) % 28 != 0
    return ch in "013678"  # digits read 영 일 삼 육 칠 팔 end in a consonant


def josa(word: str, pair: str) -> str:
    """word + the particle form that fits it: josa("민수", "은/는") -> "민수는"."""
    with_batchim, without = pair.split("/")
    return word + (with_batchim if has_batchim(word) else without)


@dataclass(frozen=True)
class Problem:
    template: str
    numbers: tuple[int, ...]
    question: str
    steps: tuple[str, ...]
    """One line per computation, each holding its equation `a op b = c`."""
    answer: int
    unit: str

    @property
    def key(self) -> str:
        """Identity for splitting and de-duplication: template and numbers, not the names."""
        return f"{self.template}:{','.join(map(str, self.numbers))}"

    @property
    def reasoning(self) -> str:
        return "\n".join(self.steps)

    @property
    def answer_text(self) -> str:
        return ANSWER_LINE.format(answer=self.answer, unit=self.unit)


def _eq(a: int, op: str, b: int) -> tuple[str, int]:
    c = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op]
    return f"{a} {op} {b} = {c}", c


# ------------------------------------------------------------------------------------ templates
# Each template draws its numbers from `r`, checks they make sense (no negative counts, exact
# division) by construction, and writes the question and the worked steps.


def _apples_gain(r: random.Random) -> Problem:
    name, (fruit, unit) = r.choice(NAMES), r.choice(FRUITS)
    a, b = r.randint(2, 50), r.randint(2, 50)
    eq, c = _eq(a, "+", b)
    q = (
        f"{josa(name, '은/는')} {josa(fruit, '을/를')} {a}{unit} 가지고 있었습니다. 친구에게 {b}{unit}를 더 받았습니다. "
        f"{josa(name, '이/가')} 가진 {josa(fruit, '은/는')} 모두 몇 {unit}입니까?"
    )
    steps = (f"처음에 있던 {a}{unit}에 받은 {b}{unit}를 더합니다: {eq}",)
    return Problem("apples_gain", (a, b), q, steps, c, unit)


def _apples_eat(r: random.Random) -> Problem:
    name, (fruit, unit) = r.choice(NAMES), r.choice(FRUITS)
    a = r.randint(5, 50)
    b = r.randint(1, a - 1)
    eq, c = _eq(a, "-", b)
    q = f"바구니에 {fruit} {a}{unit}가 있습니다. {josa(name, '이/가')} {b}{unit}를 먹었습니다. 남은 {josa(fruit, '은/는')} 몇 {unit}입니까?"
    steps = (f"있던 {a}{unit}에서 먹은 {b}{unit}를 뺍니다: {eq}",)
    return Problem("apples_eat", (a, b), q, steps, c, unit)


def _bus_on(r: random.Random) -> Problem:
    a, b = r.randint(3, 40), r.randint(2, 30)
    eq, c = _eq(a, "+", b)
    q = f"버스에 승객이 {a}명 타고 있었습니다. 이번 정류장에서 {b}명이 더 탔습니다. 지금 버스에 탄 승객은 몇 명입니까?"
    steps = (f"타고 있던 {a}명에 새로 탄 {b}명을 더합니다: {eq}",)
    return Problem("bus_on", (a, b), q, steps, c, "명")


def _money_spend(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    a = r.randint(10, 50) * 100
    b = r.randint(1, a // 100 - 1) * 100
    eq, c = _eq(a, "-", b)
    q = f"{josa(name, '은/는')} 용돈 {a}원 중에서 {b}원으로 간식을 샀습니다. 남은 용돈은 얼마입니까?"
    steps = (f"용돈 {a}원에서 쓴 {b}원을 뺍니다: {eq}",)
    return Problem("money_spend", (a, b), q, steps, c, "원")


def _boxes(r: random.Random) -> Problem:
    (fruit, unit) = r.choice(FRUITS)
    a, b = r.randint(2, 12), r.randint(3, 30)
    eq, c = _eq(a, "×", b)
    q = f"한 상자에 {fruit} {b}{unit}가 들어 있습니다. {a}상자에 들어 있는 {josa(fruit, '은/는')} 모두 몇 {unit}입니까?"
    steps = (f"한 상자의 {b}{unit}를 {a}상자만큼 곱합니다: {b} × {a} = {c}",)
    return Problem("boxes", (a, b), q, steps, c, unit)


def _share(r: random.Random) -> Problem:
    (fruit, unit) = r.choice(FRUITS)
    people, each = r.randint(2, 9), r.randint(2, 25)
    total = people * each
    eq, c = _eq(total, "÷", people)
    q = f"{fruit} {total}{unit}를 학생 {people}명에게 똑같이 나누어 주려고 합니다. 한 명에게 몇 {unit}씩 줄 수 있습니까?"
    steps = (f"전체 {total}{unit}를 {people}명으로 나눕니다: {eq}",)
    return Problem("share", (total, people), q, steps, c, unit)


def _area(r: random.Random) -> Problem:
    w, h = r.randint(2, 30), r.randint(2, 30)
    eq, c = _eq(w, "×", h)
    q = f"가로가 {w}m이고 세로가 {h}m인 직사각형 모양의 텃밭이 있습니다. 텃밭의 넓이는 몇 제곱미터입니까?"
    steps = (f"직사각형의 넓이는 가로 × 세로입니다: {eq}",)
    return Problem("area", (w, h), q, steps, c, "제곱미터")


def _big_sum(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    a, b = r.randint(100, 999), r.randint(100, 999)
    if r.random() < 0.5:
        eq, c = _eq(a, "+", b)
        q = f"도서관에 어제 {a}명, 오늘 {b}명이 왔습니다. 이틀 동안 도서관에 온 사람은 모두 몇 명입니까?"
        steps = (f"어제 온 {a}명과 오늘 온 {b}명을 더합니다: {eq}",)
        return Problem("library_sum", (a, b), q, steps, c, "명")
    a, b = max(a, b), min(a, b)
    eq, c = _eq(a, "-", b)
    q = f"{josa(name, '이/가')} 읽는 책은 모두 {a}쪽입니다. 지금까지 {b}쪽을 읽었습니다. 남은 쪽수는 몇 쪽입니까?"
    steps = (f"전체 {a}쪽에서 읽은 {b}쪽을 뺍니다: {eq}",)
    return Problem("pages_left", (a, b), q, steps, c, "쪽")


def _bus_two_stops(r: random.Random) -> Problem:
    a, b = r.randint(5, 40), r.randint(1, 20)
    off = r.randint(1, a + b - 1)
    eq1, c1 = _eq(a, "+", b)
    eq2, c2 = _eq(c1, "-", off)
    q = (
        f"버스에 승객이 {a}명 타고 있었습니다. 첫 번째 정류장에서 {b}명이 탔고, 두 번째 정류장에서 {off}명이 내렸습니다. "
        "지금 버스에 탄 승객은 몇 명입니까?"
    )
    steps = (f"첫 번째 정류장에서 {b}명이 탔으므로 {eq1}", f"두 번째 정류장에서 {off}명이 내렸으므로 {eq2}")
    return Problem("bus_two_stops", (a, b, off), q, steps, c2, "명")


def _allowance(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks = r.randint(2, 10) * 1000, r.randint(2, 8)
    eq1, total = _eq(weekly, "×", weeks)
    spend = r.randint(1, total // 500 - 1) * 500
    eq2, left = _eq(total, "-", spend)
    q = (
        f"{josa(name, '은/는')} 일주일에 용돈을 {weekly}원씩 받습니다. {weeks}주 동안 모은 용돈으로 {spend}원짜리 책을 샀습니다. "
        "남은 돈은 얼마입니까?"
    )
    steps = (f"{weeks}주 동안 받은 용돈은 {eq1}", f"책값 {spend}원을 빼면 {eq2}")
    return Problem("allowance", (weekly, weeks, spend), q, steps, left, "원")


def _boxes_eaten(r: random.Random) -> Problem:
    name, (fruit, unit) = r.choice(NAMES), r.choice(FRUITS)
    per, boxes = r.randint(3, 20), r.randint(2, 9)
    eq1, total = _eq(per, "×", boxes)
    eaten = r.randint(1, total - 1)
    eq2, left = _eq(total, "-", eaten)
    q = (
        f"{josa(name, '은/는')} {fruit} {per}{unit}씩 든 상자를 {boxes}상자 샀습니다. 그중에서 {eaten}{unit}를 먹었습니다. "
        f"남은 {josa(fruit, '은/는')} 몇 {unit}입니까?"
    )
    steps = (f"산 {josa(fruit, '은/는')} {eq1}", f"먹은 {eaten}{unit}를 빼면 {eq2}")
    return Problem("boxes_eaten", (per, boxes, eaten), q, steps, left, unit)


def _two_rooms(r: random.Random) -> Problem:
    w1, h1, w2, h2 = (r.randint(2, 12) for _ in range(4))
    eq1, a1 = _eq(w1, "×", h1)
    eq2, a2 = _eq(w2, "×", h2)
    eq3, total = _eq(a1, "+", a2)
    q = (
        f"거실은 가로 {w1}m, 세로 {h1}m인 직사각형이고, 방은 가로 {w2}m, 세로 {h2}m인 직사각형입니다. "
        "거실과 방의 넓이를 합하면 몇 제곱미터입니까?"
    )
    steps = (f"거실의 넓이는 {eq1}", f"방의 넓이는 {eq2}", f"두 넓이를 더하면 {eq3}")
    return Problem("two_rooms", (w1, h1, w2, h2), q, steps, total, "제곱미터")


def _shopping_change(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    (i1, u1, lo1, hi1, s1), (i2, u2, lo2, hi2, s2) = r.sample(STATIONERY, 2)
    p1, p2 = r.randrange(lo1, hi1 + 1, s1), r.randrange(lo2, hi2 + 1, s2)
    n1, n2 = r.randint(2, 6), r.randint(2, 5)
    eq1, c1 = _eq(p1, "×", n1)
    eq2, c2 = _eq(p2, "×", n2)
    eq3, cost = _eq(c1, "+", c2)
    paid = next(b for b in (5000, 10000, 20000, 50000) if b > cost)
    eq4, change = _eq(paid, "-", cost)
    q = (
        f"{josa(name, '은/는')} 문구점에서 한 {u1}에 {p1}원인 {i1} {josa(f'{n1}{u1}', '과/와')} 한 {u2}에 {p2}원인 {i2} {josa(f'{n2}{u2}', '을/를')} 사고 "
        f"{paid}원을 냈습니다. 거스름돈은 얼마입니까?"
    )
    steps = (f"{i1} 값은 {eq1}", f"{i2} 값은 {eq2}", f"모두 합하면 {eq3}", f"{paid}원에서 빼면 {eq4}")
    return Problem(f"shopping_change:{i1}:{i2}", (p1, n1, p2, n2, paid), q, steps, change, "원")


def _bus_three_stops(r: random.Random) -> Problem:
    a, on1 = r.randint(5, 30), r.randint(1, 15)
    off1 = r.randint(1, a + on1 - 1)
    on2 = r.randint(1, 15)
    eq1, c1 = _eq(a, "+", on1)
    eq2, c2 = _eq(c1, "-", off1)
    eq3, c3 = _eq(c2, "+", on2)
    q = (
        f"버스에 {a}명이 타고 있었습니다. 첫 번째 정류장에서 {on1}명이 탔고, 두 번째 정류장에서 {off1}명이 내렸고, "
        f"세 번째 정류장에서 {on2}명이 탔습니다. 지금 버스에 탄 사람은 몇 명입니까?"
    )
    steps = (
        f"첫 번째 정류장을 지나면 {eq1}",
        f"두 번째 정류장을 지나면 {eq2}",
        f"세 번째 정류장을 지나면 {eq3}",
    )
    return Problem("bus_three_stops", (a, on1, off1, on2), q, steps, c3, "명")


def _savings_goal(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks = r.randint(2, 9) * 1000, r.randint(3, 8)
    gift = r.randint(1, 20) * 1000
    eq1, saved = _eq(weekly, "×", weeks)
    eq2, total = _eq(saved, "+", gift)
    spend = r.randint(1, total // 1000 - 1) * 1000
    eq3, left = _eq(total, "-", spend)
    q = (
        f"{josa(name, '은/는')} 매주 {weekly}원씩 {weeks}주 동안 저금했고, 할머니께 {gift}원을 더 받았습니다. "
        f"그 돈으로 {spend}원짜리 운동화를 샀다면 남은 돈은 얼마입니까?"
    )
    steps = (
        f"{weeks}주 동안 저금한 돈은 {eq1}",
        f"할머니께 받은 돈을 더하면 {eq2}",
        f"운동화 값을 빼면 {eq3}",
    )
    return Problem("savings_goal", (weekly, weeks, gift, spend), q, steps, left, "원")


def _fence_garden(r: random.Random) -> Problem:
    w, h = r.randint(5, 25), r.randint(5, 25)
    s = r.randint(2, min(w, h) - 1)
    eq1, big = _eq(w, "×", h)
    eq2, small = _eq(s, "×", s)
    eq3, left = _eq(big, "-", small)
    q = (
        f"가로 {w}m, 세로 {h}m인 직사각형 마당의 한쪽에 한 변이 {s}m인 정사각형 연못을 만들었습니다. "
        "연못을 뺀 마당의 넓이는 몇 제곱미터입니까?"
    )
    steps = (f"마당 전체의 넓이는 {eq1}", f"연못의 넓이는 {eq2}", f"연못을 빼면 {eq3}")
    return Problem("yard_pond", (w, h, s), q, steps, left, "제곱미터")


Template = Callable[[random.Random], Problem]

# Templates by level: a registry, so a new kind of problem is one function and one line here.
ARITHMETIC: dict[int, tuple[Template, ...]] = {
    1: (_apples_gain, _apples_eat, _bus_on, _money_spend),
    2: (_boxes, _share, _area, _big_sum),
    3: (_bus_two_stops, _allowance, _boxes_eaten),
    4: (_two_rooms, _shopping_change, _bus_three_stops, _savings_goal, _fence_garden),
}


def split_of(key: str) -> str:
    """The split a problem belongs to, from a hash of its identity (stable across runs and machines)."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return "test" if (h % 10_000) < TEST_SHARE * 10_000 else "train"


def parse_levels(text: str | int | tuple | list) -> tuple[int, ...]:
    """'1..4' / '1,3' / '2' / (1, 2) -> levels; one-line error otherwise."""
    if isinstance(text, int):
        items: list[int] = [text]
    elif isinstance(text, (tuple, list)):
        items = [int(x) for x in text]
    else:
        items = []
        for part in str(text).replace(" ", "").split(","):
            lo, sep, hi = part.partition("..")
            try:
                items.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
            except ValueError:
                raise K1Error(
                    f"--level {text!r}: write a level (2), a range (1..4) or a list (1,3)"
                ) from None
    bad = [x for x in items if x not in LEVELS]
    if bad or not items:
        raise K1Error(f"--level {text!r}: levels are {LEVELS[0]}..{LEVELS[-1]}")
    return tuple(sorted(set(items)))


def to_record(p: Problem, level: int, split: str, index: int, seed: int) -> dict:
    return {
        "id": f"arithmetic-{split}-{seed}-{index}",
        "task": "arithmetic",
        "level": level,
        "template": p.template,
        "key": p.key,
        "question": p.question,
        "reasoning": p.reasoning,
        "answer": p.answer,
        "answer_text": p.answer_text,
        # Ready for `k1 sft` and the chat template: the trace as reasoning_content, so one record
        # serves both modes (SFT drops the reasoning for non-think samples).
        "messages": [
            {"role": "user", "content": p.question},
            {"role": "assistant", "content": p.answer_text, "reasoning_content": p.reasoning},
        ],
    }


def arithmetic(n: int, seed: int = 0, levels=LEVELS, split: str = "train") -> list[dict]:
    """`n` distinct problems of `split`, levels taking turns (1, 2, 3, 4, 1, ...); deterministic in the arguments."""
    levels = parse_levels(levels)
    if split not in SPLITS:
        raise K1Error(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    if not 0 <= n <= MAX_PROBLEMS:
        raise K1Error(f"--n {n}: ask for 0..{MAX_PROBLEMS:,} problems")
    rng = random.Random(f"k1.synth.arithmetic/{split}/{seed}")
    seen: set[str] = set()
    out = []
    # Level 1 has a few hundred distinct test problems: give up instead of looping forever.
    budget = 20_000
    while len(out) < n:
        level = levels[len(out) % len(levels)]
        for _ in range(budget):
            p = rng.choice(ARITHMETIC[level])(rng)
            if p.key not in seen and split_of(p.key) == split:
                break
        else:
            raise K1Error(
                f"level {level} ran out of distinct {split} problems after {len(out)}; ask for fewer (--n)"
            )
        seen.add(p.key)
        out.append(to_record(p, level, split, len(out), seed))
    return out


def check_record(record: dict) -> bool:
    """Re-do every equation in the trace and check the last result is the answer (a generator self-test)."""
    results = []
    for a, op, b, c in EQUATION.findall(record["reasoning"]):
        a, b, c = int(a), int(b), int(c)
        expected = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b if b else None}[op]
        if op == "÷" and (b == 0 or a % b):
            return False
        if expected != c:
            return False
        results.append(c)
    return bool(results) and results[-1] == record["answer"]


TASKS: dict[str, Callable[..., list[dict]]] = {"arithmetic": arithmetic}


def write_jsonl(records: list[dict], path: str | os.PathLike) -> Path:
    """One JSON object per line, written to a temporary file and renamed into place."""
    path = Path(path)
    if path.is_dir():
        raise K1Error(f"--out {path} is a directory; give a file name such as {path}/train.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
