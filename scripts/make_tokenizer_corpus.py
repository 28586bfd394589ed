"""Write k1's shipped tokenizer corpus (k1/assets/tokenizer_corpus/{ko,en,code}.txt) from scratch.

    python scripts/make_tokenizer_corpus.py

The text is generated here, from word lists and sentence patterns written for k1 (Korean with
correct particles after final consonants, English, and Python), plus k1's own source code. It is
small (well under 1 MB) and only meant to let `k1 demo` and the tests train a working tokenizer
with no downloads; a real tokenizer is trained on a real corpus (docs/tokenizer.md).
Deterministic: the same script writes the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "k1" / "assets" / "tokenizer_corpus"


def has_final(word: str) -> bool:
    """True if the last Hangul syllable ends in a consonant (받침): picks 은/는, 이/가, 을/를, 과/와."""
    ch = word[-1]
    return "가" <= ch <= "힣" and (ord(ch) - 0xAC00) % 28 != 0


def ends_in_rieul(word: str) -> bool:
    ch = word[-1]
    return "가" <= ch <= "힣" and (ord(ch) - 0xAC00) % 28 == 8


def topic(w):
    return w + ("은" if has_final(w) else "는")


def subj(w):
    return w + ("이" if has_final(w) else "가")


def obj(w):
    return w + ("을" if has_final(w) else "를")


def with_(w):
    return w + ("과" if has_final(w) else "와")


def toward(w):
    return w + ("으로" if has_final(w) and not ends_in_rieul(w) else "로")


PEOPLE = "학생 선생님 연구자 개발자 의사 요리사 할머니 아이 친구 동생 기자 농부 작가 엔지니어 사장님 손님 이웃 팀장 간호사 운전기사".split()
PLACES = "학교 도서관 시장 병원 공원 회사 서울 부산 제주도 대전 광주 바닷가 산 카페 연구소 박물관 기차역 공항 식당 사무실".split()
THINGS = (
    "책 사과 커피 편지 컴퓨터 자전거 우산 노트북 신문 지도 사진 음악 영화 김치 라면 비빔밥 떡볶이 모델 데이터 "
    "토크나이저 문장 질문 답변 코드 그림 계획 보고서 숙제 약속 선물 날씨 뉴스 소설 시험 기계 전화 메시지"
).split()
TOPICS = "인공지능 경제 역사 과학 교육 건강 환경 문화 정치 스포츠 기술 언어 수학 음식 여행 예술 철학 의학 농업 에너지".split()
ADJ = [
    ("좋다", "좋은", "좋아요", "좋습니다"),
    ("크다", "큰", "커요", "큽니다"),
    ("작다", "작은", "작아요", "작습니다"),
    ("새롭다", "새로운", "새로워요", "새롭습니다"),
    ("어렵다", "어려운", "어려워요", "어렵습니다"),
    ("쉽다", "쉬운", "쉬워요", "쉽습니다"),
    ("빠르다", "빠른", "빨라요", "빠릅니다"),
    ("중요하다", "중요한", "중요해요", "중요합니다"),
    ("재미있다", "재미있는", "재미있어요", "재미있습니다"),
    ("조용하다", "조용한", "조용해요", "조용합니다"),
    ("따뜻하다", "따뜻한", "따뜻해요", "따뜻합니다"),
    ("복잡하다", "복잡한", "복잡해요", "복잡합니다"),
]
# (plain, polite present, formal past, connective -고, conditional, purpose -러, noun-modifier past)
VERBS = [
    ("읽다", "읽어요", "읽었습니다", "읽고", "읽으면", "읽으러", "읽은"),
    ("먹다", "먹어요", "먹었습니다", "먹고", "먹으면", "먹으러", "먹은"),
    ("보다", "봐요", "봤습니다", "보고", "보면", "보러", "본"),
    ("만들다", "만들어요", "만들었습니다", "만들고", "만들면", "만들러", "만든"),
    ("배우다", "배워요", "배웠습니다", "배우고", "배우면", "배우러", "배운"),
    ("가르치다", "가르쳐요", "가르쳤습니다", "가르치고", "가르치면", "가르치러", "가르친"),
    ("쓰다", "써요", "썼습니다", "쓰고", "쓰면", "쓰러", "쓴"),
    ("찾다", "찾아요", "찾았습니다", "찾고", "찾으면", "찾으러", "찾은"),
    ("듣다", "들어요", "들었습니다", "듣고", "들으면", "들으러", "들은"),
    ("사다", "사요", "샀습니다", "사고", "사면", "사러", "산"),
    ("보내다", "보내요", "보냈습니다", "보내고", "보내면", "보내러", "보낸"),
    ("고치다", "고쳐요", "고쳤습니다", "고치고", "고치면", "고치러", "고친"),
    ("정리하다", "정리해요", "정리했습니다", "정리하고", "정리하면", "정리하러", "정리한"),
    ("공부하다", "공부해요", "공부했습니다", "공부하고", "공부하면", "공부하러", "공부한"),
    ("준비하다", "준비해요", "준비했습니다", "준비하고", "준비하면", "준비하러", "준비한"),
    ("확인하다", "확인해요", "확인했습니다", "확인하고", "확인하면", "확인하러", "확인한"),
    ("설명하다", "설명해요", "설명했습니다", "설명하고", "설명하면", "설명하러", "설명한"),
    ("분석하다", "분석해요", "분석했습니다", "분석하고", "분석하면", "분석하러", "분석한"),
]
MOVES = [
    ("가다", "가요", "갔습니다", "가고"),
    ("오다", "와요", "왔습니다", "오고"),
    ("다니다", "다녀요", "다녔습니다", "다니고"),
]
TIMES = "오늘 어제 내일 아침에 저녁에 주말에 요즘 지난주에 다음 달에 방금 가끔 매일 자주 드디어 벌써".split()
LATIN = "AI GPU CPU API JSON Python PyTorch GitHub USB Wi-Fi k1 A.X LLM BPE SQL HTML iPhone OpenAI K-pop KTX".split()
COUNTERS = ["개", "명", "권", "잔", "번", "시간", "분", "년", "월", "일", "원", "킬로미터", "퍼센트", "살"]
CONNECT = "그리고 그래서 하지만 그런데 또한 따라서 게다가 그러므로 예를 들어 결국".split()


def korean_sentence(r: random.Random) -> str:
    p, q = r.choice(PEOPLE), r.choice(PEOPLE)
    place, thing, thing2 = r.choice(PLACES), r.choice(THINGS), r.choice(THINGS)
    v, v2, adj, mv = r.choice(VERBS), r.choice(VERBS), r.choice(ADJ), r.choice(MOVES)
    t, tp, lat = r.choice(TIMES), r.choice(TOPICS), r.choice(LATIN)
    n, unit = r.randint(1, 2030), r.choice(COUNTERS)
    patterns = [
        f"{t} {topic(p)} {place}에서 {obj(thing)} {v[2]}",
        f"{subj(p)} {place}에 {mv[2]}",
        f"{topic(q)} {with_(p)} 함께 {obj(thing)} {v[1]}",
        f"{place}에서 {v[5]} {mv[1]}",
        f"{topic(thing)} 정말 {adj[2]}",
        f"{adj[1]} {obj(thing)} {v[4]} {subj(p)} 기뻐할 거예요",
        f"{tp}에 대한 {subj(thing2)} {adj[3]}",
        f"{v[6]} {topic(thing)} {place}에 두었습니다",
        f"{obj(lat)} 사용해서 {obj(thing)} {v[2]}",
        f"{subj(lat)} {adj[1]} 이유는 무엇일까요?",
        f"{p}의 {topic(thing)} {n}{unit}입니다",
        f"{n}{unit} 동안 {obj(thing)} {v[3]} 쉬었어요",
        f"{r.choice(CONNECT)} {topic(p)} {toward(place)} {mv[2]}",
        f"{p}에게 {obj(thing)} 보냈는데 아직 답장이 없어요",
        f"왜 {topic(p)} {obj(thing)} {v[1].removesuffix('요')}? 궁금해요",
        f"{n}년 {r.randint(1, 12)}월 {r.randint(1, 28)}일에 {subj(p)} {place}에서 {obj(tp)} 발표했습니다",
        f"{tp} 분야에서 {topic(lat)} 점점 더 {adj[2]}",
        f'"{thing}{"이" if has_final(thing) else ""}요?" {subj(p)} 물었다',
        f"{p}: {obj(thing)} 어디에서 {v[0].removesuffix('다')}나요?",
        f"{topic(p)} {obj(thing)} {v[3]} {obj(thing2)} {v2[2]}",
    ]
    sentence = r.choice(patterns)
    return sentence if sentence.endswith("?") else sentence + r.choice([".", ".", ".", "!", "", "~"])


def korean(r: random.Random, n_paragraphs: int) -> str:
    paras = []
    for _ in range(n_paragraphs):
        kind = r.random()
        if kind < 0.15:  # a short chat exchange
            lines = [f"질문: {korean_sentence(r)}", f"답변: {korean_sentence(r)} {korean_sentence(r)}"]
            paras.append("\n".join(lines))
        elif kind < 0.25:  # a numbered list
            paras.append("\n".join(f"{i}. {korean_sentence(r)}" for i in range(1, r.randint(3, 6))))
        else:
            paras.append(" ".join(korean_sentence(r) for _ in range(r.randint(2, 7))))
    return "\n\n".join(paras) + "\n"


EN_SUBJ = "the student|a researcher|my neighbour|the engineer|our team|the old farmer|a small child|the model|this tokenizer|the committee|everyone".split(
    "|"
)
EN_VERB = (
    "reads|writes|builds|measures|explains|repairs|trains|tests|studies|describes|compares|improves".split(
        "|"
    )
)
EN_OBJ = "a long report|the new library|every sentence|the Korean text|a short poem|the results|a simple program|the river map|its vocabulary|the market prices".split(
    "|"
)
EN_PLACE = "in the morning|at the station|near the harbour|before dinner|after the meeting|during the winter|on the second floor|without any help".split(
    "|"
)
EN_ADV = "carefully|quickly|again|quietly|finally|often|rarely|patiently".split("|")


def english(r: random.Random, n_paragraphs: int) -> str:
    paras = []
    for _ in range(n_paragraphs):
        sents = []
        for _ in range(r.randint(2, 6)):
            s, v, o, pl, adv = (
                r.choice(EN_SUBJ),
                r.choice(EN_VERB),
                r.choice(EN_OBJ),
                r.choice(EN_PLACE),
                r.choice(EN_ADV),
            )
            pattern = r.choice(
                [
                    f"{s} {v} {o} {pl}",
                    f"{s} {adv} {v} {o}",
                    f"{pl}, {s} {v} {o} and it's {r.choice(['fine', 'better', 'slower', 'done'])}",
                    f"{s} {v} {r.randint(2, 999)} pages of {o.split()[-1]} in {r.randint(2, 60)} minutes",
                    f"why does {s} {v.rstrip('s')} {o}",
                    f'"{o.capitalize()}," said {s}, "is what we need"',
                ]
            )
            sents.append(pattern[0].upper() + pattern[1:] + ("?" if pattern.startswith("why") else "."))
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


def code(r: random.Random, n_funcs: int) -> str:
    parts = []
    # k1's own source: real, idiomatic Python that we wrote.
    for path in sorted((ROOT / "k1").rglob("*.py")):
        parts.append(f"# ==== {path.relative_to(ROOT)} ====\n" + path.read_text(encoding="utf-8"))
    names = "total count items values scores tokens lines words rows result".split()
    ops = ["+", "-", "*", "//", "%"]
    for i in range(n_funcs):
        a, b = r.sample(names, 2)
        op = r.choice(ops)
        parts.append(
            f"def combine_{a}_{b}_{i}({a}: list[int], {b}: list[int]) -> list[int]:\n"
            f'    """Combine {a} and {b} element by element."""\n'
            f"    out = []\n"
            f"    for x, y in zip({a}, {b}):\n"
            f"        if x > {r.randint(0, 99)}:\n"
            f"            out.append(x {op} y)\n"
            f"        else:\n"
            f"            out.append({r.randint(0, 9)})\n"
            f"    return out\n"
        )
    return "\n\n".join(parts)


def main() -> None:
    r = random.Random(20240101)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ko.txt").write_text(korean(r, 1500), encoding="utf-8")
    (OUT / "en.txt").write_text(english(r, 500), encoding="utf-8")
    (OUT / "code.txt").write_text(code(r, 150), encoding="utf-8")
    for f in sorted(OUT.glob("*.txt")):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
