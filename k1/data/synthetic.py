"""Generated data for the data stage: a labelled PII set and a small messy corpus with planted PII.

    from k1.data.synthetic import pii_examples, evaluate_pii, generate_corpus
    examples = pii_examples(n_per_type=200, seed=0)        # texts with gold (start, end, type) spans
    table = evaluate_pii(examples)                          # precision / recall per type
    canaries = generate_corpus("out/raw", docs=600, seed=0) # jsonl/txt/csv files + the canary strings

The PII values follow the real rules (registration numbers carry real birth dates and, before October
2020, a valid check digit; cards pass Luhn; phones use real area codes), embedded in Korean and English
prose, glued to Hangul particles, with spaces, dots and +82 forms. The hard negatives are things that
look like PII and are not: impossible dates, failed Luhn checks, dates, prices, order and invoice
numbers, version strings, barcodes. Faker's ko_KR locale adds addresses, emails, landlines and cards
when it is installed (a test-only dependency); without it the hand-written generators cover every type.
"""

from __future__ import annotations

import datetime
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from k1.data.pii import PII_TYPES, find_pii, luhn_ok, rrn_checksum_ok


@dataclass
class Labelled:
    text: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, s: str) -> Labelled:
        self.text += s
        return self

    def pii(self, value: str, kind: str) -> Labelled:
        self.spans.append((len(self.text), len(self.text) + len(value), kind))
        self.text += value
        return self


# ----------------------------------------------------------------------------------------------
# value generators (rng: random.Random)

_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def gen_rrn(rng: random.Random, foreigner: bool = False) -> str:
    """A registration number with a real birth date; a valid check digit for births before Oct 2020."""
    today = datetime.date.today()
    while True:
        born = datetime.date(1935, 1, 1) + datetime.timedelta(
            days=rng.randrange((today - datetime.date(1935, 1, 1)).days)
        )
        male = rng.random() < 0.5
        if born.year < 2000:
            g = (5 if male else 6) if foreigner else (1 if male else 2)
        else:
            g = (7 if male else 8) if foreigner else (3 if male else 4)
        front = born.strftime("%y%m%d") + str(g)
        if born >= datetime.date(2020, 10, 1):
            return front + "".join(str(rng.randrange(10)) for _ in range(6))
        body = front + "".join(str(rng.randrange(10)) for _ in range(5))
        for c in "0123456789":
            if rrn_checksum_ok(body + c):
                return body + c


def fmt_rrn(rng: random.Random, digits: str) -> str:
    r = rng.random()
    if r < 0.7:
        return digits[:6] + "-" + digits[6:]
    if r < 0.8:
        return digits[:6] + " " + digits[6:]
    if r < 0.85:
        return digits[:6] + " - " + digits[6:]
    return digits


_AREA = [
    "02",
    "031",
    "032",
    "033",
    "041",
    "042",
    "043",
    "044",
    "051",
    "052",
    "053",
    "054",
    "055",
    "061",
    "062",
    "063",
    "064",
]


def gen_phone(rng: random.Random) -> str:
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    kind = rng.random()
    if kind < 0.6:
        pre, mid, last = "010", d(4), d(4)
    elif kind < 0.68:
        pre, mid, last = (
            rng.choice(["011", "016", "017", "019"]),
            str(rng.randrange(2, 10)) + d(rng.choice([2, 3])),
            d(4),
        )
    elif kind < 0.75:
        pre, mid, last = "070", str(rng.randrange(2, 10)) + d(3), d(4)
    else:
        pre, mid, last = rng.choice(_AREA), str(rng.randrange(2, 10)) + d(rng.choice([2, 3])), d(4)
    f = rng.random()
    if f < 0.45:
        return f"{pre}-{mid}-{last}"
    if f < 0.55:
        return f"{pre} {mid} {last}"
    if f < 0.63:
        return f"{pre}.{mid}.{last}"
    if f < 0.73:
        return f"{pre}{mid}{last}"
    if f < 0.8:
        return f"+82 {pre[1:]}-{mid}-{last}"
    if f < 0.85:
        return f"+82-{pre[1:]}-{mid}-{last}"
    if f < 0.88:
        return f"+82{pre[1:]}{mid}{last}"
    if f < 0.91:
        return f"+82 (0){pre[1:]}-{mid}-{last}"
    if f < 0.96:
        return f"({pre}) {mid}-{last}"
    return f"{pre}){mid}-{last}"


_CARD_PREFIXES = [
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("34", 15),
    ("37", 15),
    ("3528", 16),
    ("6011", 16),
    ("62", 16),
    ("9410", 16),
    ("36", 14),
]


def luhn_complete(body: str) -> str:
    for c in "0123456789":
        if luhn_ok(body + c):
            return body + c
    raise AssertionError("unreachable")


def gen_card_digits(rng: random.Random, valid: bool = True) -> str:
    prefix, n = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(n - len(prefix) - 1))
    full = luhn_complete(body)
    if not valid:
        full = full[:-1] + str((int(full[-1]) + rng.randrange(1, 10)) % 10)
    return full


def fmt_card(rng: random.Random, digits: str) -> str:
    if len(digits) == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    elif len(digits) == 14:
        groups = [digits[:4], digits[4:10], digits[10:]]
    elif len(digits) == 16:
        groups = [digits[i : i + 4] for i in range(0, 16, 4)]
    else:
        return digits
    r = rng.random()
    return "-".join(groups) if r < 0.5 else " ".join(groups) if r < 0.85 else digits


_BANKS = [
    ("국민은행", (6, 2, 6)),
    ("KB국민", (6, 2, 6)),
    ("신한은행", (3, 3, 6)),
    ("신한", (3, 2, 6)),
    ("우리은행", (4, 3, 6)),
    ("하나은행", (3, 6, 5)),
    ("농협", (3, 4, 4, 2)),
    ("NH농협은행", (6, 2, 6)),
    ("IBK기업은행", (3, 6, 2, 3)),
    ("카카오뱅크", (4, 2, 7)),
    ("토스뱅크", (4, 4, 4)),
    ("우체국", (6, 2, 6)),
    ("새마을금고", (4, 2, 6, 1)),
    ("SC제일은행", (3, 2, 6)),
    ("케이뱅크", (3, 3, 6)),
]


def gen_account(rng: random.Random) -> tuple[str, str]:
    bank, layout = rng.choice(_BANKS)
    groups = ["".join(str(rng.randrange(10)) for _ in range(n)) for n in layout]
    groups[0] = str(rng.randrange(1, 10)) + groups[0][1:]
    return bank, ("-".join(groups) if rng.random() < 0.85 else "".join(groups))


def gen_passport(rng: random.Random) -> tuple[str, bool]:
    letter = rng.choice("MMMMMSROD")
    if rng.random() < 0.5:
        return letter + f"{rng.randrange(10**8):08d}", True  # old shape: needs context
    return f"{letter}{rng.randrange(1000):03d}{chr(65 + rng.randrange(26))}{rng.randrange(10000):04d}", False


_REGION_NAMES = [
    "서울",
    "부산",
    "경기",
    "강원",
    "충북",
    "충남",
    "전북",
    "전남",
    "경북",
    "경남",
    "제주",
    "대구",
    "인천",
    "광주",
    "대전",
    "울산",
]


def gen_license(rng: random.Random) -> str:
    yy, serial, check = (
        f"{rng.randrange(100):02d}",
        f"{rng.randrange(10**6):06d}",
        f"{rng.randrange(100):02d}",
    )
    if rng.random() < 0.75:
        return f"{rng.choice([*range(11, 27), 28])}-{yy}-{serial}-{check}"
    return f"{rng.choice(_REGION_NAMES)} {yy}-{serial}-{check}"


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        first = rng.choice([*range(1, 10), *range(11, 127), *range(128, 224)])
        return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    groups = [f"{rng.randrange(1, 65536):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8::" + ":".join(groups[5:])
    return ":".join(groups)


_ROMAN = [
    "kim",
    "lee",
    "park",
    "choi",
    "jung",
    "kang",
    "cho",
    "yoon",
    "jang",
    "lim",
    "minji",
    "jiwoo",
    "seojun",
    "hayoon",
    "dohyun",
]
_DOMAINS = [
    "naver.com",
    "gmail.com",
    "daum.net",
    "kakao.com",
    "example.co.kr",
    "korea.ac.kr",
    "mail.k1-test.org",
    "hanmail.net",
]


def gen_email(rng: random.Random) -> str:
    user = (
        rng.choice(_ROMAN)
        + rng.choice(["", ".", "_", "-"])
        + rng.choice(_ROMAN)
        + str(rng.randrange(100)) * rng.randrange(2)
    )
    if rng.random() < 0.1:
        user += "+news"
    return f"{user}@{rng.choice(_DOMAINS)}"


_SIDO = [
    "서울특별시",
    "부산광역시",
    "대구광역시",
    "인천광역시",
    "경기도",
    "강원특별자치도",
    "충청남도",
    "전라북도",
    "경상남도",
    "제주특별자치도",
]
_SGG = [
    "강남구",
    "서초구",
    "마포구",
    "중구",
    "해운대구",
    "수성구",
    "성남시 분당구",
    "수원시 영통구",
    "춘천시",
    "천안시 동남구",
    "전주시 완산구",
    "창원시 의창구",
    "제주시",
    "남구",
    "고양시 일산동구",
]
_ROADS = [
    "테헤란로",
    "세종대로",
    "올림픽로",
    "판교역로",
    "센텀중앙로",
    "달구벌대로",
    "월드컵북로",
    "중앙로",
    "번영로",
    "효자로",
    "충장로",
    "동문로",
]
_DONG = ["역삼동", "서초동", "우동", "범어동", "정자동", "연동", "망원동", "서교동", "봉명동"]


def gen_address_ko(rng: random.Random) -> str:
    head = (rng.choice(_SIDO) + " " if rng.random() < 0.75 else "") + rng.choice(_SGG)
    if rng.random() < 0.7:
        road = rng.choice(_ROADS) + (f" {rng.randrange(1, 80)}길" if rng.random() < 0.3 else "")
        num = str(rng.randrange(1, 999)) + (f"-{rng.randrange(1, 50)}" if rng.random() < 0.3 else "")
        body = f"{head} {road} {num}"
    else:
        body = f"{head} {rng.choice(_DONG)} {rng.randrange(1, 2000)}" + (
            f"-{rng.randrange(1, 30)}" if rng.random() < 0.5 else ""
        )
    r = rng.random()
    if r < 0.25:
        body += f", {rng.randrange(101, 120)}동 {rng.randrange(1, 25)}0{rng.randrange(1, 5)}호"
    elif r < 0.35:
        body += f" {rng.randrange(2, 20)}층"
    return body


_EN_NAMES = [
    "Maple",
    "Oak",
    "Baker",
    "Sunset",
    "Main",
    "Park",
    "Elm",
    "Lincoln",
    "Washington",
    "Highland",
    "Cedar Hill",
]
_EN_SUFFIX = [
    "Street",
    "St.",
    "Avenue",
    "Ave",
    "Road",
    "Boulevard",
    "Lane",
    "Drive",
    "Way",
    "Court",
    "Parkway",
]
_CITIES = [
    ("Springfield", "IL"),
    ("Austin", "TX"),
    ("Portland", "OR"),
    ("Mountain View", "CA"),
    ("Boston", "MA"),
]


def gen_address_en(rng: random.Random) -> str:
    s = f"{rng.randrange(1, 9999)} {rng.choice(_EN_NAMES)} {rng.choice(_EN_SUFFIX)}"
    if rng.random() < 0.3:
        s += f", Apt {rng.randrange(1, 40)}{rng.choice('ABC')}"
    if rng.random() < 0.6:
        city, st = rng.choice(_CITIES)
        s += f", {city}, {st} {rng.randrange(10000, 99999)}"
    return s


# ----------------------------------------------------------------------------------------------
# contexts: Korean and English prose around a value, particles glued on

_PARTICLES = [
    "",
    "",
    "로",
    "으로",
    "이고",
    "입니다",
    "이에요",
    "에서",
    "를",
    "을",
    "와",
    "과",
    "(으)로",
    "번으로",
    ".",
]


def _ctx(rng: random.Random, kind: str) -> tuple[str, str]:
    words = {
        "rrn": ["주민등록번호", "주민번호", "RRN", "등록번호는", "생년월일 포함 번호"],
        "frn": ["외국인등록번호", "외국인 등록번호는", "ARC no.", "등록번호"],
        "phone": [
            "연락처",
            "전화번호는",
            "휴대폰",
            "Tel.",
            "Call me at",
            "문의 전화",
            "대표번호",
            "핸드폰 번호",
        ],
        "email": ["이메일", "메일 주소는", "email:", "Contact", "문의는", "보내실 곳"],
        "card": ["카드번호", "신용카드", "card number", "결제 카드", "Visa"],
        "account": ["계좌번호", "입금 계좌:", "송금할 계좌", "account"],
        "passport": ["여권번호", "여권 번호는", "Passport No.", "passport number"],
        "driver_license": ["운전면허번호", "면허번호", "driver's license", "운전면허증 번호"],
        "ip": ["접속 IP", "IP 주소", "from", "서버 주소", "client ip"],
        "address": ["주소:", "주소는", "배송지", "Address:", "lives at", "사무실은"],
    }[kind]
    pre = rng.choice(words) + rng.choice([" ", ": ", " ", "\n"])
    if rng.random() < 0.15:
        pre = ""  # the bare value inside prose
    post = (
        rng.choice(_PARTICLES)
        if kind not in ("email",)
        else rng.choice(["", "으로", "로", ".", " 로 보내주세요"])
    )
    return pre, post


_FILLER_KO = [
    "어제 회의에서 결정된 사항을 정리했습니다. ",
    "자세한 내용은 아래를 참고해 주세요. ",
    "다음 주까지 확인 부탁드립니다. ",
    "고객님께서 요청하신 정보입니다. ",
    "오늘 날씨가 정말 좋네요. ",
    "",
]
_FILLER_EN = ["Please find the details below. ", "Thanks for your order. ", "As discussed on the call, ", ""]


def _positive(rng: random.Random, kind: str, fk) -> Labelled:
    b = Labelled().add(rng.choice(_FILLER_KO + _FILLER_EN))
    if kind in ("rrn", "frn"):
        value = fmt_rrn(rng, gen_rrn(rng, foreigner=kind == "frn"))
    elif kind == "phone":
        value = fk.phone_number() if fk and rng.random() < 0.2 else gen_phone(rng)
    elif kind == "email":
        value = fk.email() if fk and rng.random() < 0.4 else gen_email(rng)
    elif kind == "card":
        value = fk.credit_card_number() if fk and rng.random() < 0.2 else fmt_card(rng, gen_card_digits(rng))
    elif kind == "account":
        bank, value = gen_account(rng)
        b.add(rng.choice(["입금 계좌: ", "", "송금은 ", "환불 계좌 "]) + bank + " ").pii(value, "account")
        return b.add(rng.choice(["", " (예금주 홍길동)", "로 보내주세요.", "입니다."]))
    elif kind == "passport":
        value, needs_context = gen_passport(rng)
        pre, post = _ctx(rng, kind)
        if needs_context and not pre:
            pre = "여권번호 "
        return b.add(pre).pii(value, kind).add(post)
    elif kind == "driver_license":
        value = gen_license(rng)
    elif kind == "ip":
        value = fk.ipv4_public() if fk and rng.random() < 0.3 else gen_ip(rng)
    elif kind == "address":
        r = rng.random()
        if fk and r < 0.3:
            value = fk.road_address() if rng.random() < 0.6 else fk.land_address()
        else:
            value = gen_address_en(rng) if r > 0.85 else gen_address_ko(rng)
        pre, _ = _ctx(rng, kind)
        return (
            b.add(pre)
            .pii(value, kind)
            .add(rng.choice(["", "에 있습니다.", "로 보내주세요.", ".", " 입니다", "(으)로 배송"]))
        )
    else:
        raise KeyError(kind)
    pre, post = _ctx(rng, kind)
    return b.add(pre).pii(value, kind).add(post)


def _hard_negatives(rng: random.Random) -> list[str]:
    """One of each kind of look-alike that must not be scrubbed."""
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    y, m, dd = rng.randrange(1990, 2025), rng.randrange(1, 13), rng.randrange(1, 29)
    yy = rng.randrange(30, 100)
    bad_month, bad_day = rng.randrange(13, 20), rng.randrange(32, 40)
    non_leap = rng.choice([1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19])
    ean_body = "880" + d(9)
    ean = ean_body + str((10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(ean_body)) % 10) % 10)
    return [
        f"주민등록번호 {yy:02d}{bad_month:02d}{rng.randrange(1, 29):02d}-{rng.choice('12')}{d(6)}는 잘못된 번호입니다.",
        f"주민번호 {yy:02d}{m:02d}{bad_day}-{rng.choice('1256')}{d(6)}을(를) 확인하세요",
        f"생년월일 {yy:02d}0230-{rng.choice('12')}{d(6)} 은 존재하지 않는 날짜",
        f"등록번호 {non_leap:02d}0229-{rng.choice('34')}{d(6)}",
        f"카드번호 {fmt_card(rng, gen_card_digits(rng, valid=False))}는 유효하지 않습니다.",
        f"card {gen_card_digits(rng, valid=False)} was declined",
        f"{y}-{m:02d}-{dd:02d}에 배송되었습니다.",
        f"작성일 {y}.{m:02d}.{dd:02d} 수정 {y % 100:02d}.{m:02d}.{dd:02d}",
        f"가격은 {rng.randrange(1, 999)},{d(3)},{d(3)}원이고 할인가는 ₩{rng.randrange(1, 99)},{d(3)}입니다.",
        f"총액 ${rng.randrange(1, 9)},{d(3)}.{d(2)} (세금 포함)",
        f"주문번호 {y}{m:02d}{dd:02d}-{d(4)}-{d(4)} 로 조회하세요.",
        f"주문번호: {y}-{d(4)}-{d(4)}-{d(4)}",
        f"송장번호 {rng.randrange(5000, 7000)}-{d(4)}-{d(4)}",
        f"예약번호 010-{y}{m:02d}{dd:02d}-{d(2)}",
        f"Python {rng.randrange(2, 4)}.{rng.randrange(0, 13)}.{rng.randrange(0, 20)} 버전으로 업그레이드",
        f"version {rng.randrange(1, 20)}.{rng.randrange(0, 10)}.{rng.randrange(0, 10)}.{rng.randrange(0, 100)} released",
        f"v{rng.randrange(1, 20)}.{rng.randrange(0, 10)}.{rng.randrange(0, 99)}.{rng.randrange(0, 99)} 릴리스 노트",
        f"Chrome {rng.randrange(90, 130)}.0.{rng.randrange(1000, 9999)}.{rng.randrange(10, 200)}",
        f"바코드 {ean} 상품",
        f"사업자등록번호 {rng.randrange(100, 999)}-{d(2)}-{d(5)}",
        f"ISBN 978-89-{d(4)}-{d(3)}-{rng.randrange(10)}",
        f"제품코드 S{d(8)} 재고 {rng.randrange(1, 500)}개",
        f"MAC 00:1A:{rng.randrange(16, 99)}:3C:4D:5E, 시간 {rng.randrange(10, 24)}:{rng.randrange(10, 60)}:{rng.randrange(10, 60)}",
        f"좌표 37.{d(4)}, 126.{d(4)} 근처",
        f"{rng.randrange(1, 28)}일 {rng.randrange(1, 12)}시 {rng.randrange(1, 59)}분에 친구 집으로 {rng.randrange(2, 9)}번 갔다.",
        f"{y}년 {m}월 {dd}일, 제{rng.randrange(100, 3000)}호 안건, 참석자 {rng.randrange(10, 999)}명",
        "loopback 127.0.0.1, netmask 255.255.255.0, any 0.0.0.0",
        f"점수는 3.{d(5)} 이고 비율은 {rng.randrange(1, 99)}.{d(1)}%",
        f"UUID {d(8)}-e29b-41d4-a716-{d(12)}",
        f"학번 {y}{d(5)}, 사번 {d(6)}",
    ]


def pii_examples(n_per_type: int = 200, seed: int = 0, use_faker: bool = True) -> list[Labelled]:
    """A labelled set: n_per_type positives per PII type plus a round of hard negatives per 10 positives."""
    rng = random.Random(seed)
    fk = None
    if use_faker:
        try:
            from faker import Faker

            fk = Faker("ko_KR")
            fk.seed_instance(seed)
        except ImportError:
            fk = None
    out: list[Labelled] = []
    for kind in PII_TYPES:
        for _ in range(n_per_type):
            out.append(_positive(rng, kind, fk))
    # documents with several PII values in running prose
    for _ in range(n_per_type // 2):
        b = Labelled().add(rng.choice(_FILLER_KO))
        for kind in rng.sample(PII_TYPES, 3):
            part = _positive(rng, kind, fk)
            offset = len(b.text)
            b.text += part.text
            b.spans.extend((s + offset, e + offset, k) for s, e, k in part.spans)
            b.add(" " + rng.choice(_FILLER_KO))
        out.append(b)
    for _ in range(max(1, n_per_type // 10)):
        out.extend(Labelled(text=t) for t in _hard_negatives(rng))
    return out


def evaluate_pii(examples: list[Labelled], coverage: float = 0.9) -> dict[str, dict[str, float]]:
    """Precision and recall per type. A gold span counts as found when predictions of its type cover at
    least `coverage` of its characters; a prediction is correct when it overlaps a gold span of its type."""
    tp_gold, n_gold, tp_pred, n_pred = defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int)
    for ex in examples:
        preds = find_pii(ex.text)
        for s, e, kind in ex.spans:
            n_gold[kind] += 1
            covered = sum(max(0, min(e, p.end) - max(s, p.start)) for p in preds if p.kind == kind)
            if covered >= coverage * (e - s):
                tp_gold[kind] += 1
        for p in preds:
            n_pred[p.kind] += 1
            if any(k == p.kind and p.start < e and s < p.end for s, e, k in ex.spans):
                tp_pred[p.kind] += 1
    table = {}
    for kind in PII_TYPES:
        table[kind] = {
            "gold": n_gold[kind],
            "predicted": n_pred[kind],
            "recall": tp_gold[kind] / n_gold[kind] if n_gold[kind] else float("nan"),
            "precision": tp_pred[kind] / n_pred[kind] if n_pred[kind] else float("nan"),
        }
    return table


def misses(examples: list[Labelled], kind: str | None = None, limit: int = 20) -> list[str]:
    """Texts where a gold span was missed or a prediction was wrong (for debugging the detectors)."""
    out = []
    for ex in examples:
        preds = find_pii(ex.text)
        gold = {(s, e, k) for s, e, k in ex.spans}
        got = {(p.start, p.end, p.kind) for p in preds}
        if gold != got and (kind is None or any(k == kind for *_, k in gold | got)):
            out.append(f"{ex.text!r}\n   gold={sorted(gold)}\n   pred={sorted(got)}")
        if len(out) >= limit:
            break
    return out


# ----------------------------------------------------------------------------------------------
# a small messy corpus: Korean, English and code documents with PII, duplicates and junk

_KO_SUBJ = [
    "우리 팀은",
    "이 연구는",
    "지역 주민들은",
    "학생들은",
    "회사는",
    "정부는",
    "작가는",
    "시민 단체는",
    "개발자들은",
    "연구진은",
]
_KO_OBJ = [
    "새로운 방법을",
    "데이터 품질을",
    "한국어 모델을",
    "지역 축제를",
    "환경 문제를",
    "교육 과정을",
    "도서관 서비스를",
    "전통 음식을",
    "기후 변화 대응을",
    "오픈소스 도구를",
]
_KO_VERB = [
    "소개했다",
    "검토하고 있다",
    "개선하기로 했다",
    "발표했다",
    "준비하고 있다",
    "분석했다",
    "지원하기로 결정했다",
    "논의했다",
]
_KO_ADV = ["올해", "지난달", "최근", "다음 주에", "오랜 논의 끝에", "처음으로", "본격적으로", "조심스럽게"]
_KO_TAIL = [
    "관계자는 앞으로도 꾸준히 노력하겠다고 밝혔다.",
    "많은 사람들이 큰 관심을 보였다.",
    "전문가들은 긍정적인 평가를 내렸다.",
    "구체적인 일정은 아직 정해지지 않았다.",
    "이번 결정은 여러 의견을 반영한 결과다.",
    "참가자들은 만족스럽다는 반응을 보였다.",
]
_EN_SUBJ = [
    "The committee",
    "Our team",
    "The researchers",
    "Local residents",
    "The city council",
    "Volunteers",
    "The library",
]
_EN_VERB = ["announced", "reviewed", "improved", "discussed", "published", "planned", "supported"]
_EN_OBJ = [
    "a new reading program",
    "the annual festival",
    "the data pipeline",
    "a community garden",
    "the transit plan",
    "an open dataset",
]
_EN_TAIL = [
    "Details will follow next week.",
    "Many people attended the meeting.",
    "The decision was welcomed.",
    "More work remains to be done.",
]


_KO_PLACE = [
    "서울",
    "부산",
    "대구",
    "광주",
    "대전",
    "제주",
    "강릉",
    "전주",
    "수원",
    "춘천",
    "포항",
    "목포",
    "세종",
    "울산",
    "인천",
]
_KO_NOUN = [
    "도서관",
    "박물관",
    "시장",
    "공원",
    "학교",
    "병원",
    "연구소",
    "마을",
    "항구",
    "공장",
    "극장",
    "체육관",
]


def _ko_doc(rng: random.Random, sentences: int) -> str:
    tails = rng.sample(_KO_TAIL, min(len(_KO_TAIL), sentences))
    out = []
    for i in range(sentences):
        s = (
            f"{rng.choice(_KO_ADV)} {rng.choice(_KO_PLACE)} {rng.choice(_KO_NOUN)}에서 {rng.choice(_KO_SUBJ)} "
            f"{rng.randrange(2, 500)}명과 함께 {rng.choice(_KO_OBJ)} {rng.choice(_KO_VERB)}."
        )
        out.append(s + (" " + tails[i] if i < len(tails) and rng.random() < 0.5 else ""))
    return "\n".join(out)


def _en_doc(rng: random.Random, sentences: int) -> str:
    tails = rng.sample(_EN_TAIL, min(len(_EN_TAIL), sentences))
    out = []
    for i in range(sentences):
        s = f"{rng.choice(_EN_SUBJ)} {rng.choice(_EN_VERB)} {rng.choice(_EN_OBJ)} with {rng.randrange(2, 900)} people on day {rng.randrange(1, 365)}."
        out.append(s + (" " + tails[i] if i < len(tails) and rng.random() < 0.5 else ""))
    return " ".join(out)


def _code_doc(rng: random.Random) -> str:
    verb = rng.choice(
        ["load", "parse", "count", "merge", "scale", "clean", "split", "rank", "group", "score"]
    )
    noun = rng.choice(["rows", "tokens", "items", "files", "users", "events", "pages", "lines"])
    var = rng.choice(["value", "item", "entry", "record", "x"])
    n, m = rng.randrange(2, 99), rng.randrange(2, 17)
    body = rng.choice(
        [
            f"    result = []\n    for i, {var} in enumerate(values):\n        if {var} is None:\n            continue\n"
            f"        result.append({var} * factor + i % {m})\n    return result\n",
            f"    total = 0\n    for {var} in values:\n        total += {var} if {var} > {m} else -{var}\n    return total * factor\n",
            f"    seen = {{}}\n    for {var} in values:\n        seen[{var} % {m}] = seen.get({var} % {m}, 0) + factor\n"
            f"    return sorted(seen.items())\n",
        ]
    )
    return (
        f"def {verb}_{noun}(values, factor={n}):\n"
        f'    """{verb.capitalize()} the {noun} (variant {rng.randrange(10**6)})."""\n'
        + body
        + f"\n\nif __name__ == '__main__':\n    print({verb}_{noun}(list(range({rng.randrange(3, 500)}))))\n"
    )


def canary_values(seed: int = 0) -> list[str]:
    """Canary strings planted into the generated corpus: PII the scrubber must remove, so that finding
    one in the shards proves a leak."""
    rng = random.Random(f"canary-{seed}")
    return [
        fmt_rrn(random.Random(1), gen_rrn(rng)).replace(" - ", "-").replace(" ", "-"),
        f"010-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}",
        f"canary.{rng.randrange(16**6):06x}@k1-canary.example.com",
        "-".join(fmt_card(random.Random(2), gen_card_digits(rng)).replace("-", " ").split(" ")),
    ]


def generate_corpus(out_dir: str | Path, docs: int = 600, seed: int = 0) -> list[str]:
    """Write a small corpus (jsonl, txt, csv) with planted PII, canaries, duplicates, junk and one
    malformed file into `out_dir`; return the canary strings."""
    import csv

    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    canaries = canary_values(seed)
    records: list[dict] = []
    for i in range(docs):
        r = rng.random()
        if r < 0.55:
            text, lang = _ko_doc(rng, rng.randrange(3, 9)), "ko"
        elif r < 0.8:
            text, lang = _en_doc(rng, rng.randrange(3, 9)), "en"
        else:
            text, lang = _code_doc(rng), "code"
        if lang != "code" and rng.random() < 0.3:
            part = _positive(rng, rng.choice(PII_TYPES), None)
            text += "\n" + part.text
        records.append({"id": f"gen-{i:05d}", "text": text, "lang_hint": lang})
    # canaries: each planted in a fresh document (so no dedup removes them before the scrubber sees them)
    for j, canary in enumerate(canaries):
        records.append(
            {"id": f"canary-{j}", "text": _ko_doc(rng, 4) + f"\n비상 연락처와 정보: {canary} 입니다."}
        )
    # exact and near duplicates
    for k in range(docs // 10):
        src = records[rng.randrange(docs)]
        text = src["text"] if k % 2 == 0 else src["text"].replace(".", "!", 1) + " 끝."
        records.append({"id": f"dup-{k:05d}", "text": text})
    # junk: too short, symbols, repeated lines, boilerplate
    for k in range(docs // 20):
        junk = [
            "ㅋㅋ",
            "!!!! @@@@ #### $$$$ %%%% ^^^^ &&&& **** (((( )))) ____ ++++ ==== ~~~~ ```` |||| " * 3,
            "\n".join(["무료 이벤트 지금 클릭하세요!"] * 12),
            "Copyright 2024. All rights reserved.\n무단 전재 및 재배포 금지\n" * 5,
        ][k % 4]
        records.append({"id": f"junk-{k:05d}", "text": junk})
    rng.shuffle(records)
    third = len(records) // 3
    with open(out / "part-000.jsonl", "w", encoding="utf-8") as f:
        for rec in records[:third]:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.write('{"id": "broken", "text": "unterminated\n')  # a malformed line the run must list and skip
    with open(out / "part-001.jsonl", "w", encoding="utf-8") as f:
        for rec in records[third : 2 * third]:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(out / "part-002.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text"])
        w.writeheader()
        for rec in records[2 * third :]:
            w.writerow({"id": rec["id"], "text": rec["text"]})
    (out / "notes.txt").write_text(
        "\n".join(_ko_doc(rng, 2).replace("\n", " ") for _ in range(20)) + "\n", encoding="utf-8"
    )
    (out / "corrupt.jsonl").write_bytes(b"\xff\xfe\x00binary\x00garbage\xc3\x28\n" * 4)
    return canaries
