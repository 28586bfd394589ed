"""PII scrubbing: find Korean (and common international) personal data and replace it by typed placeholders.

    from k1.data import scrub
    text, counts = scrub("연락처 010-1234-5678로 주세요")   # -> "연락처 <|pii:phone|>로 주세요", {"phone": 1}

    k1 data scrub notes.txt > clean.txt               # or stdin to stdout

Each PII type is a detector in `DETECTORS` (name -> function yielding candidate spans). Detectors validate
what a regex alone cannot: a resident registration number must carry a real birth date and a valid
gender/century digit, a card number must pass Luhn and start with a card-network prefix, an IP address
must parse. Weak shapes (a bare 13-digit run, a digit group that could be an account or a product code)
need a context word nearby ("주민", "계좌", "여권", ...). Overlapping candidates are resolved by type
priority, then length.

No well-kept library covers Korean PII with these validations: Microsoft Presidio needs spaCy and a
downloaded model and has almost no Korean recognizers; datatrove's PIIFormatter handles emails and IPs
only. Hence hand-written detectors, measured by bench/data_pipeline.py on the labelled set that
k1.data.synthetic generates (hard negatives included).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Order = priority when two candidates overlap (earlier wins), e.g. a 13-digit run that is both a valid
# registration number and a Luhn-valid number is reported as a registration number.
PII_TYPES: tuple[str, ...] = (
    "email",
    "rrn",
    "frn",
    "card",
    "phone",
    "driver_license",
    "passport",
    "account",
    "ip",
    "address",
)
PRIORITY = {name: i for i, name in enumerate(PII_TYPES)}

# A document longer than this is scrubbed in windows (detectors are linear, but a single pathological
# multi-megabyte line should not hold a worker for long); PII spans are short, so windows overlap by
# WINDOW_OVERLAP characters and spans are deduplicated.
WINDOW_CHARS = 1 << 20
WINDOW_OVERLAP = 256


def placeholder(kind: str) -> str:
    """The token that replaces a span of type `kind`, e.g. `<|pii:rrn|>`."""
    return f"<|pii:{kind}|>"


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    kind: str


# ----------------------------------------------------------------------------------------------
# shared pieces

# Python's \b treats Hangul as word characters, so "010-1234-5678로" has no \b after the 8: every
# boundary below is spelled out with ASCII classes instead.
_L = r"(?<![0-9A-Za-z])(?<![0-9][.\-])"  # not glued to a longer number or word on the left
_R = r"(?![0-9A-Za-z])(?![.\-][0-9])"  # ... nor on the right
_DASH = r"[-\u2010\u2011\u2013\u2014]"


def _context(text: str, start: int, end: int, pattern: re.Pattern, before: int = 30, after: int = 12) -> bool:
    return bool(pattern.search(text, max(0, start - before), start)) or bool(
        pattern.search(text, end, min(len(text), end + after))
    )


# ----------------------------------------------------------------------------------------------
# resident / foreigner registration numbers (주민등록번호, 외국인등록번호): YYMMDD-GNNNNNC

# 7th digit -> (century, foreigner). 9/0 are 1800s births: valid, but nobody alive carries one, so they
# also need the check digit.
_RRN_CENTURY = {
    "1": (1900, False),
    "2": (1900, False),
    "3": (2000, False),
    "4": (2000, False),
    "5": (1900, True),
    "6": (1900, True),
    "7": (2000, True),
    "8": (2000, True),
    "9": (1800, False),
    "0": (1800, False),
}
_RRN_RE = re.compile(_L + r"(\d{6})(\s?" + _DASH + r"\s?| |)([0-9])(\d{6})" + _R)
_RRN_MASKED_RE = re.compile(_L + r"(\d{6})\s?" + _DASH + r"\s?([1-8])[*xX●]{6}" + r"(?![0-9A-Za-z*])")
_RRN_CONTEXT = re.compile(r"주민|등록\s?번호|외국인|생년|RRN|ARC|[Rr]esident|[Rr]egistration")
_BARE_NOT_RRN = re.compile(
    r"바코드|[Bb]arcode|EAN|ISBN|상품\s?코드|계좌|은행|뱅크|통장|입금|송금|이체|[Aa]ccount|카드|[Cc]ard\b|주문\s?번호|송장|"
    r"[Oo]rder\s?(?:[Nn]o|[Nn]umber|#|ID)"
)
# Numbers issued from October 2020 carry a random last digit instead of a checksum.
_NO_CHECKSUM_FROM = datetime.date(2020, 10, 1)
_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def _birth_date(yymmdd: str, gender: str) -> datetime.date | None:
    century, _ = _RRN_CENTURY[gender]
    try:
        born = datetime.date(century + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))
    except ValueError:
        return None
    return born if born <= datetime.date.today() else None


def rrn_checksum_ok(digits: str) -> bool:
    """The pre-2020 check digit: (11 - sum % 11) % 10 for citizens, (13 - sum % 11) % 10 for foreigners."""
    total = sum(int(d) * w for d, w in zip(digits[:12], _RRN_WEIGHTS, strict=True))
    foreigner = _RRN_CENTURY[digits[6]][1]
    expected = ((13 if foreigner else 11) - total % 11) % 10
    return int(digits[12]) == expected


def _detect_rrn(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _RRN_RE.finditer(text):
        front, sep, gender, rest = m.groups()
        born = _birth_date(front, gender)
        if born is None:
            continue
        digits = front + gender + rest
        checksum = rrn_checksum_ok(digits)
        if gender in "90" and not checksum:
            continue
        if sep:
            ok = True
        else:  # a bare 13-digit run could be a barcode, an account or an order number: ask for more evidence
            said = _context(text, m.start(), m.end(), _RRN_CONTEXT, before=20, after=0)
            other = _context(text, m.start(), m.end(), _BARE_NOT_RRN, before=25, after=0)
            ok = said or (not other and (checksum or born >= _NO_CHECKSUM_FROM))
        if ok:
            yield m.start(), m.end(), "frn" if _RRN_CENTURY[gender][1] else "rrn"
    for m in _RRN_MASKED_RE.finditer(text):
        if _birth_date(m.group(1), m.group(2)) is not None:
            yield m.start(), m.end(), "frn" if _RRN_CENTURY[m.group(2)][1] else "rrn"


# ----------------------------------------------------------------------------------------------
# phone numbers: mobile 010/011/016-019, landline area codes, 070 VoIP, 050x personal safe numbers

_PREFIX = r"(?:1[016789]|2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50[2-8])"
_SEP = r"(?:\s?" + _DASH + r"\s?|[. ]|)"
_PHONE_DOMESTIC = r"\(?(?P<pre>0" + _PREFIX + r")(?:\)\s?|" + _SEP + r")"
_PHONE_INTL = (
    r"(?:\+\s?82|82(?=[-. ]))[-. ]?\s?(?:\(0\)\s?)?(?P<ipre>" + _PREFIX + r")(?:\)\s?|" + _SEP + r")"
)
_PHONE_RE = re.compile(
    _L + r"(?:" + _PHONE_INTL + r"|" + _PHONE_DOMESTIC + r")(?P<mid>\d{3,4})" + _SEP + r"(?P<last>\d{4})" + _R
)
_MOBILE = {"010", "011", "016", "017", "018", "019"}


def _detect_phone(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _PHONE_RE.finditer(text):
        prefix, mid = m.group("pre") or "0" + m.group("ipre"), m.group("mid")
        if prefix == "010" and len(mid) != 4:
            continue  # every 010 number has a four-digit exchange
        if prefix not in _MOBILE and mid[0] in "01" and m.group(0).count("-") < 2:
            # Real exchanges never start with 0 or 1 (fake-data generators ignore that): accept one only
            # in the unmistakable 0XX-XXX-XXXX shape, which keeps bare order numbers out.
            continue
        yield m.start(), m.end(), "phone"


# ----------------------------------------------------------------------------------------------
# payment cards: 13-19 digits, Luhn, a card-network prefix

_CARD_RE = re.compile(_L + r"\d{4}(?:(?P<sep>[- ]?)\d{2,6}){1,4}" + _R)
_CARD_CONTEXT = re.compile(r"카드|[Cc]ard|결제|VISA|[Vv]isa|[Mm]aster|AMEX|JCB")
_NOT_CARD = re.compile(r"계좌|은행|뱅크|통장|입금|송금|이체|예금|[Aa]ccount|[Bb]ank")
_CARD_SHAPES = {
    (4, 4, 4, 4),
    (4, 6, 5),
    (4, 6, 4),
    (4, 4, 4, 4, 3),
    (4, 4, 4, 3),
    (4, 4, 4, 2),
    (4, 4, 4, 4, 2),
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return n == 16
    if two in (34, 37):  # Amex
        return n == 15
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:  # Diners
        return 14 <= n <= 19
    if two == 35:  # JCB (3528-3589; generators also use the rest of 35xx)
        return 16 <= n <= 19
    if four in (2131, 1800):  # JCB 15-digit
        return n == 15
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or two == 62:  # Discover, UnionPay
        return 16 <= n <= 19
    if two in (50, 56, 57, 58, 63, 67) or four == 604:  # Maestro
        return 12 <= n <= 19
    if digits[0] == "9":  # Korean domestic cards (BC, 국민, ...)
        return n == 16
    return False


def _detect_card(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _CARD_RE.finditer(text):
        raw = m.group(0)
        groups = tuple(len(g) for g in re.split(r"[- ]", raw))
        seps = set(re.findall(r"[- ]", raw))
        if len(seps) > 1:
            continue
        if len(groups) > 1 and groups not in _CARD_SHAPES:
            continue
        digits = raw.replace("-", "").replace(" ", "")
        if len(groups) == 1 and _context(text, m.start(), m.end(), _NOT_CARD, before=25, after=0):
            if not _context(text, m.start(), m.end(), _CARD_CONTEXT, before=25, after=0):
                continue  # a bare digit run next to a banking word is an account number
        if 12 <= len(digits) <= 19 and luhn_ok(digits) and _card_prefix_ok(digits):
            yield m.start(), m.end(), "card"


# ----------------------------------------------------------------------------------------------
# bank accounts: bank-specific digit layouts; shared layouts need a banking word nearby

_ACCOUNT_RE = re.compile(_L + r"\d{2,6}(?:" + _DASH + r"\d{1,7}){1,3}" + _R)
_ACCOUNT_BARE_RE = re.compile(_L + r"\d{10,14}" + _R)
# (group lengths) used by Korean banks: 국민/우체국 6-2-6, 신한 3-3-6 / 3-2-6, 우리 4-3-6, 하나 3-6-5,
# 농협 3-4-4-2, 기업 3-6-2-3, 카카오뱅크 4-2-7, 토스뱅크 4-4-4, 새마을 4-2-6-1, 씨티 3-6-3 ...
_ACCOUNT_LAYOUTS_DISTINCT = {
    (6, 2, 6),
    (3, 6, 5),
    (3, 6, 2, 3),
    (4, 2, 7),
    (4, 3, 6),
    (3, 2, 4, 3),
    (4, 2, 6, 1),
}
_ACCOUNT_LAYOUTS_SHARED = {
    (3, 3, 6),
    (3, 2, 6),
    (3, 4, 4, 2),
    (4, 4, 4),
    (3, 6, 3),
    (3, 5, 3),
    (3, 2, 6, 1),
    (6, 2, 7),
}
_ACCOUNT_CONTEXT = re.compile(
    r"계좌|은행|뱅크|통장|입금|예금주|송금|이체|농협|신한|국민|우리|하나|기업|우체국|새마을|수협|신협|카카오|토스|"
    r"[Aa]ccount|[Aa]cct|[Bb]ank|IBAN"
)


def _detect_account(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _ACCOUNT_RE.finditer(text):
        groups = tuple(len(g) for g in re.split(_DASH, m.group(0)))
        if groups in _ACCOUNT_LAYOUTS_DISTINCT or (
            groups in _ACCOUNT_LAYOUTS_SHARED and _context(text, m.start(), m.end(), _ACCOUNT_CONTEXT)
        ):
            yield m.start(), m.end(), "account"
    for m in _ACCOUNT_BARE_RE.finditer(text):
        if _context(text, m.start(), m.end(), _ACCOUNT_CONTEXT, before=25, after=8):
            yield m.start(), m.end(), "account"


# ----------------------------------------------------------------------------------------------
# passports: M12345678 (before Dec 2021) or M123A4567 (since); the old shape also needs a context word

_PASSPORT_NEW_RE = re.compile(r"(?<![0-9A-Za-z])[MSRODGT]\d{3}[A-Z]\d{4}(?![0-9A-Za-z])")
_PASSPORT_OLD_RE = re.compile(r"(?<![0-9A-Za-z])[MSRODGT]\d{8}(?![0-9A-Za-z])")
_PASSPORT_CONTEXT = re.compile(r"여권|[Pp]assport|PASSPORT")


def _detect_passport(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _PASSPORT_NEW_RE.finditer(text):
        yield m.start(), m.end(), "passport"
    for m in _PASSPORT_OLD_RE.finditer(text):
        if _context(text, m.start(), m.end(), _PASSPORT_CONTEXT, before=40, after=10):
            yield m.start(), m.end(), "passport"


# ----------------------------------------------------------------------------------------------
# driver's licences: RR-YY-NNNNNN-CC, RR a region code 11-28 or a region name (서울 12-345678-90)

_REGIONS = (
    "서울|부산|경기북부|경기남부|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산|세종"
)
_LICENSE_CODE_RE = re.compile(_L + r"(1[1-9]|2[0-8])(" + _DASH + r"| )(\d{2})\2(\d{6})\2(\d{2})" + _R)
_LICENSE_NAME_RE = re.compile(
    r"(?:" + _REGIONS + r")\s?(\d{2})" + _DASH + r"(\d{6})" + _DASH + r"(\d{2})" + _R
)
_LICENSE_BARE_RE = re.compile(_L + r"(1[1-9]|2[0-8])\d{10}" + _R)
_LICENSE_CONTEXT = re.compile(r"면허|[Ll]icen[cs]e|운전")


def _detect_license(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _LICENSE_CODE_RE.finditer(text):
        if m.group(2) != " " or _context(text, m.start(), m.end(), _LICENSE_CONTEXT, before=30, after=0):
            yield m.start(), m.end(), "driver_license"
    for m in _LICENSE_NAME_RE.finditer(text):
        yield m.start(), m.end(), "driver_license"
    for m in _LICENSE_BARE_RE.finditer(text):
        if _context(text, m.start(), m.end(), _LICENSE_CONTEXT, before=30, after=0):
            yield m.start(), m.end(), "driver_license"


# ----------------------------------------------------------------------------------------------
# IP addresses. Loopback, unspecified, broadcast and netmasks identify nobody and are left alone.

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(r"(?<![0-9A-Za-z.])" + _OCTET + r"(?:\." + _OCTET + r"){3}(?![0-9A-Za-z]|\.\d)")
_IPV6_RE = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])")
_VERSION_CONTEXT = re.compile(
    r"(?:[Vv]ersions?|[Vv]er\.?|버전|릴리스|[Rr]elease|build|빌드|[Ss]ections?|[Cc]hapter|§|절|조|항)\s*:?\s*[\[('\"]*$"
)


def _detect_ip(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _IPV4_RE.finditer(text):
        ip = ipaddress.IPv4Address(m.group(0))
        if ip.is_loopback or ip.is_unspecified or m.group(0).startswith("255."):
            continue
        if max(ip.packed) < 10:
            continue  # "4.3.1.2." is an outline number, not a host
        if _VERSION_CONTEXT.search(text, max(0, m.start() - 16), m.start()):
            continue
        yield m.start(), m.end(), "ip"
    for m in _IPV6_RE.finditer(text) if ":" in text else ():
        cand = m.group(0)
        if cand.count(":") < 3 or not any(c.isdigit() for c in cand):
            continue
        try:
            ip6 = ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        if ip6.is_loopback or ip6.is_unspecified:
            continue
        yield m.start(), m.end(), "ip"


# ----------------------------------------------------------------------------------------------
# emails

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)


def _detect_email(text: str) -> Iterator[tuple[int, int, str]]:
    if "@" not in text:
        return
    for m in _EMAIL_RE.finditer(text):
        yield m.start(), m.end(), "email"


# ----------------------------------------------------------------------------------------------
# street addresses: Korean road-name (도로명) and lot-number (지번) addresses, US-style street addresses

_SIDO = (
    r"(?:서울특별시|부산광역시|대구광역시|인천광역시|광주광역시|대전광역시|울산광역시|세종특별자치시|경기도|"
    r"강원특별자치도|강원도|충청북도|충청남도|전북특별자치도|전라북도|전라남도|경상북도|경상남도|제주특별자치도|"
    r"서울시|부산시|대구시|인천시|광주시|대전시|울산시|세종시|"
    r"서울|부산|대구|인천|광주|대전|울산|세종|경기|강원|충북|충남|전북|전남|경북|경남|제주)"
)
# A 시/군/구 name has at least two syllables before its suffix ("다시", "친구" do not), except the
# one-syllable district names.
_SGG = r"(?:[가-힣]{2,5}(?:시|군|구)|[중동서남북]구)"
# "가" roads come from Faker's ko_KR data (real ones are 동 names such as 종로1가, covered by _LAND).
_ROAD = r"[가-힣0-9·]{1,15}(?<!으)(?:대로|로|길|거리|가)(?:\s?\d{1,4}(?:번?길|가길))?"
_LAND = r"(?:[가-힣0-9]{1,10}(?:동|읍|면|리|마을)|[가-힣]{1,8}\d{1,2}가)(?:\s[가-힣0-9]{1,10}리)?\s(?:산\s?)?"
_NUM = r"(?:지하\s?)?\d{1,5}(?:-\d{1,5})?(?:번지)?"
# After the building number: end, punctuation, a particle, or an apartment detail; never a unit word
# such as 번/분/시간 (which would make "친구 집으로 2번" an address).
_ADDR_END = r"(?![.,]\d)(?=$|[\s,.)\]!?:;\"'」』]|에|의|으로|로|이|가|은|는|도|까지|부터|\()"
_DETAIL = r"(?:,?\s?(?:\d{1,4}동\s?)?\d{1,5}호|,?\s?\d{1,3}층)?(?:\s?\([가-힣0-9A-Za-z, ]{2,30}\))?"
_KO_ADDRESS_RE = re.compile(
    r"(?<![가-힣])(?=[가-힣])(?:" + _SIDO + r"\s(?:" + _SGG + r"\s){0,2}|(?:" + _SGG + r"\s){1,2})"
    r"(?:" + _ROAD + r"\s?|" + _LAND + r")" + _NUM + _ADDR_END + _DETAIL
)
_EN_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Parkway|Pkwy|"
    r"Terrace|Circle|Highway|Hwy|Square|Sq)"
)
_EN_ADDRESS_RE = re.compile(
    r"(?<![0-9A-Za-z])\d{1,6}[A-Z]?\s(?:[NSEW]\.?\s)?(?:[A-Z][a-z]+\s){1,3}" + _EN_SUFFIX + r"(?![A-Za-z])\.?"
    r"(?:,?\s(?:Apt|Suite|Unit|#)\.?\s?[0-9A-Za-z\-]{1,6})?"
    r"(?:,\s[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2},\s[A-Z]{2}\s\d{5}(?:-\d{4})?)?"
)


_KO_ADDRESS_HINT = re.compile(r"[가-힣][시군구도]\s")


def _detect_address(text: str) -> Iterator[tuple[int, int, str]]:
    if _KO_ADDRESS_HINT.search(text):
        for m in _KO_ADDRESS_RE.finditer(text):
            yield m.start(), m.end(), "address"
    for m in _EN_ADDRESS_RE.finditer(text):
        yield m.start(), m.end(), "address"


# ----------------------------------------------------------------------------------------------
# registry and the scrubber

Detector = Callable[[str], Iterator[tuple[int, int, str]]]
DETECTORS: dict[str, Detector] = {
    "email": _detect_email,
    "rrn": _detect_rrn,  # also yields "frn"
    "card": _detect_card,
    "phone": _detect_phone,
    "driver_license": _detect_license,
    "passport": _detect_passport,
    "account": _detect_account,
    "ip": _detect_ip,
    "address": _detect_address,
}
_HAS_DIGIT_OR_AT = re.compile(r"[0-9@]")


def _resolve(cands: list[tuple[int, int, str]]) -> list[Span]:
    chosen: list[Span] = []
    for start, end, kind in sorted(cands, key=lambda c: (PRIORITY[c[2]], c[0] - c[1], c[0])):
        if all(end <= s.start or start >= s.end for s in chosen):
            chosen.append(Span(start, end, kind))
    return sorted(chosen)


def _segments(text: str) -> Iterator[tuple[int, int]]:
    """Runs of lines that hold a digit or an '@', each with the line before it (for context words such as
    "주소:" on their own line). Every detector needs one of those characters, so prose lines are skipped
    without running a single regex over them."""
    pos, n = 0, len(text)
    seg_start = seg_end = -1
    while True:
        m = _HAS_DIGIT_OR_AT.search(text, pos)
        if m is None:
            break
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line_end = n if line_end < 0 else line_end
        context_start = text.rfind("\n", 0, max(0, line_start - 1)) + 1 if line_start else 0
        if seg_end >= 0 and context_start <= seg_end + 1:
            seg_end = line_end
        else:
            if seg_end >= 0:
                yield seg_start, seg_end
            seg_start, seg_end = context_start, line_end
        pos = line_end + 1
    if seg_end >= 0:
        yield seg_start, seg_end


def find_pii(text: str, types: tuple[str, ...] | None = None) -> list[Span]:
    """Non-overlapping PII spans in `text`, sorted by position."""
    wanted = set(PII_TYPES if types is None else types)
    cands: set[tuple[int, int, str]] = set()
    for seg_start, seg_end in _segments(text):
        for offset in range(seg_start, seg_end, WINDOW_CHARS):
            lo = max(seg_start, offset - WINDOW_OVERLAP)
            window = text[lo : min(seg_end, offset + WINDOW_CHARS)]
            for detector in DETECTORS.values():
                for start, end, kind in detector(window):
                    if kind in wanted:
                        cands.add((start + lo, end + lo, kind))
    return _resolve(list(cands)) if cands else []


def scrub(text: str, types: tuple[str, ...] | None = None) -> tuple[str, dict[str, int]]:
    """Replace every PII span by its typed placeholder; return the new text and counts by type."""
    spans = find_pii(text, types)
    if not spans:
        return text, {}
    out, pos = [], 0
    for span in spans:
        out.append(text[pos : span.start])
        out.append(placeholder(span.kind))
        pos = span.end
    out.append(text[pos:])
    return "".join(out), dict(Counter(span.kind for span in spans))


def validate_types(types: list[str] | tuple[str, ...], where: str = "pii.types") -> tuple[str, ...]:
    from k1.errors import ConfigError, did_you_mean

    for t in types:
        if t not in PII_TYPES:
            raise ConfigError(f"{where}: unknown PII type {t!r}{did_you_mean(t, PII_TYPES)}")
    return tuple(types)
