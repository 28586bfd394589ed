"""Tests for k1.data: the PII scrubber against labelled and hand-written hard cases, each filter, the
readers, and the whole datatrove pipeline (shards, manifest, determinism, resume, canaries)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from k1.data import scrub
from k1.data.language import identify
from k1.data.normalize import normalize
from k1.data.pii import PII_TYPES, find_pii, luhn_ok, rrn_checksum_ok
from k1.data.quality import check, default_quality
from k1.data.synthetic import evaluate_pii, gen_card_digits, gen_rrn, pii_examples
from k1.errors import ConfigError, K1Error

# ----------------------------------------------------------------------------------------------
# PII


@pytest.mark.parametrize("seed", [0, 1])
def test_pii_precision_recall_on_labelled_set(seed):
    """The issue's goal on the generated set: recall >= 99% and precision >= 95% for every type."""
    table = evaluate_pii(pii_examples(n_per_type=150, seed=seed))
    for kind in PII_TYPES:
        row = table[kind]
        assert row["gold"] >= 100, kind
        assert row["recall"] >= 0.99, (kind, row)
        assert row["precision"] >= 0.95, (kind, row)


MUST_SCRUB = [
    ("연락처 010-1234-5678로 주세요", "phone"),
    ("전화는 010 2345 6789 입니다", "phone"),
    ("휴대폰 010.3456.7890으로", "phone"),
    ("번호 01045678901이고", "phone"),
    ("Call +82 10-2345-6789 today", "phone"),
    ("국제전화 +821023456789", "phone"),
    ("사무실 (02) 345-6789", "phone"),
    ("대표 02)3456-7890번", "phone"),
    ("부산 051-234-5678에서", "phone"),
    ("주민등록번호 900101-1234568이고", "rrn"),  # check digit fine or not: separator form suffices
    ("주민번호는 900101 1234567", "rrn"),
    ("생년월일 포함 900101-1******", "rrn"),
    ("외국인등록번호 950505-5123456을", "frn"),
    ("메일 hong.gildong@example.co.kr으로 보내세요", "email"),
    ("결제 카드 4111-1111-1111-1111 사용", "card"),
    ("card 5500 0000 0000 0004 ok", "card"),
    ("Amex 3782 822463 10005", "card"),
    ("입금 계좌: 국민은행 123456-78-901234 (예금주 홍길동)", "account"),
    ("카카오뱅크 3333-12-1234567로 보내줘", "account"),
    ("신한은행 110-123-456789", "account"),
    ("여권번호 M12345678입니다", "passport"),
    ("passport M123A4567", "passport"),
    ("운전면허 11-23-123456-78", "driver_license"),
    ("면허증 서울 12-345678-90", "driver_license"),
    ("접속 IP 203.0.113.45에서", "ip"),
    ("from 2001:db8:85a3::8a2e:370:7334 at noon", "ip"),
    ("주소: 서울특별시 강남구 테헤란로 123, 4층", "address"),
    ("경기도 성남시 분당구 판교역로 235에 있습니다", "address"),
    ("He lives at 221B Baker Street, London.", "address"),
]


@pytest.mark.parametrize("text,kind", MUST_SCRUB)
def test_hard_positives_are_scrubbed(text, kind):
    out, counts = scrub(text)
    assert counts.get(kind) == 1, (text, out, counts)
    assert f"<|pii:{kind}|>" in out


MUST_KEEP = [
    "주민등록번호 991345-1234567은 잘못된 번호",  # month 13
    "주민번호 990230-1234567",  # February 30
    "등록번호 010229-3234567",  # 2001 is not a leap year
    "카드번호 4111 1111 1111 1112 는 Luhn 실패",
    "2024-03-15에 배송, 2024.03.15 작성",
    "가격은 1,234,567원, 할인가 ₩12,500",
    "주문번호 2023-1105-0001-2345",
    "송장번호 6071-2345-6789",
    "예약번호 010-20231105-77",
    "Python 3.11.7 버전, version 1.2.3.4, v10.0.19045.3693",
    "바코드 8801234567893 상품",
    "사업자등록번호 123-45-67890",
    "제품코드 S12345678 재고 3개",
    "loopback 127.0.0.1 and netmask 255.255.255.0",
    "MAC 00:1A:2B:3C:4D:5E at 12:30:45",
    "친구 집으로 2번 갔다. 다시 학교로 3시간 걸렸다.",
    "좌표 37.5665, 126.9780 근처",
]


@pytest.mark.parametrize("text", MUST_KEEP)
def test_hard_negatives_are_kept(text):
    assert scrub(text) == (text, {}), find_pii(text)


def test_validators():
    rng = __import__("random").Random(0)
    for _ in range(50):
        assert luhn_ok(gen_card_digits(rng))
        assert not luhn_ok(gen_card_digits(rng, valid=False))
    assert rrn_checksum_ok("8001011234560") and not rrn_checksum_ok("8001011234561")  # worked by hand
    born_before_2020 = [d for d in (gen_rrn(rng) for _ in range(50)) if d[6] in "12" or d[:2] < "20"]
    assert all(rrn_checksum_ok(d) for d in born_before_2020)


def test_scrub_keeps_text_around_spans_and_counts():
    text = "A 010-2345-6789, B hong@example.com, 끝."
    out, counts = scrub(text)
    assert out == "A <|pii:phone|>, B <|pii:email|>, 끝."
    assert counts == {"phone": 1, "email": 1}
    assert scrub(text, types=("email",))[0] == "A 010-2345-6789, B <|pii:email|>, 끝."


def test_scrub_cli_stdin_and_files(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("전화 010-2345-6789\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "k1", "data", "scrub", "--counts"],
        input="메일 a.b@example.org",
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == "메일 <|pii:email|>"
    assert json.loads(run.stderr) == {"email": 1}
    run = subprocess.run(
        [sys.executable, "-m", "k1", "data", "scrub", str(f)], capture_output=True, text=True, check=True
    )
    assert run.stdout == "전화 <|pii:phone|>\n"
    bad = subprocess.run(
        [sys.executable, "-m", "k1", "data", "scrub", str(tmp_path / "nope.txt")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "nope.txt" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------------------------
# normalize, language, quality, dedup parameters


def test_normalize():
    decomposed = "\u1100\u1161"  # 가 as conjoining jamo
    assert normalize(decomposed) == "가"
    assert normalize("a\u200bb\x00c\r\nd  \n\n\n\ne\u3000f") == "abc\nd\n\ne f"
    assert normalize("def f():\n    return 1") == "def f():\n    return 1"  # indentation kept


def test_language():
    assert identify("오늘은 날씨가 정말 좋아서 공원에 갔다.") == "ko"
    assert identify("The quick brown fox jumps over the lazy dog.") == "en"
    assert identify("import os\n\ndef main():\n    x = os.getcwd()\n    return x\n") == "code"
    assert identify("これは日本語の文章です。") == "other"
    assert identify("12345 !!!") == "other"


def test_quality_reasons():
    q = default_quality()
    good = "지역 주민들은 올해 새로운 도서관 서비스를 함께 준비하고 있다. 많은 사람들이 큰 관심을 보였다."
    assert check(good, "ko", q["ko"]) is None
    assert check("ㅋㅋ", "ko", q["ko"]) == "too_short"
    assert check("ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ ㅠㅠㅠㅠㅠ 좋아요 최고", "ko", q["ko"]) == "high_jamo_ratio"
    assert check("\n".join(["무료 이벤트 지금 클릭하세요!"] * 10), "ko", q["ko"]) == "repeated_lines"
    assert check("@@@@ #### $$$$ %%%% ^^^^ &&&& ****  가나다라마바사", "ko", q["ko"]) == "high_symbol_ratio"
    assert (
        check("Copyright 2024 ACME.\nAll rights reserved.\n무단 전재 및 재배포 금지", "other", q["other"])
        == "boilerplate"
    )
    assert check(" ".join(["buy cheap pills now"] * 10), "en", q["en"]) in (
        "no_stop_words",
        "repeated_ngrams",
    )


def test_minhash_bands_follow_threshold():
    from k1.data.dedup import minhash_bands

    lo, hi = minhash_bands(0.5, 112), minhash_bands(0.9, 112)
    assert lo[0] * lo[1] <= 112 and hi[0] * hi[1] <= 112
    assert hi[1] > lo[1]  # a stricter threshold needs more rows per band
    b, r = minhash_bands(0.8, 112)
    assert abs((1 / b) ** (1 / r) - 0.8) < 0.1  # the S-curve's midpoint sits near the threshold


# ----------------------------------------------------------------------------------------------
# readers


def _read_all(specs, split_bytes=1 << 30):
    from k1.data.read import plan_units, read_unit

    units, skipped = plan_units(specs, split_bytes)
    errors = list(skipped)
    recs = [r for u in units for r in read_unit(u, specs[u.spec_index], errors)]
    return recs, errors


def test_readers_all_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from k1.data.read import InputSpec

    (tmp_path / "a.txt").write_text("첫 줄\n\n둘째 줄\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        '{"body": "json 하나", "key": "k1"}\nnot json\n{"other": 1}\n', encoding="utf-8"
    )
    (tmp_path / "c.csv").write_text('body,key\n"csv, with comma",c1\n"multi\nline",c2\n', encoding="utf-8")
    pq.write_table(pa.table({"body": ["pq one", "pq two"], "key": ["p1", "p2"]}), tmp_path / "d.parquet")
    (tmp_path / "e.bin").write_bytes(b"\x00\x01")
    recs, errors = _read_all([InputSpec(path=str(tmp_path), text_field="body", id_field="key")])
    texts = sorted(r.text for r in recs)
    assert texts == sorted(
        ["첫 줄", "둘째 줄", "json 하나", "csv, with comma", "multi\nline", "pq one", "pq two"]
    )
    assert {r.id for r in recs} >= {"k1", "c1", "c2", "p1", "p2"}
    reasons = " ".join(e["reason"] for e in errors)
    assert "malformed JSON" in reasons and "no field 'body'" in reasons and "unknown file type" in reasons


def test_reader_hf_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    from k1.data.read import InputSpec

    datasets.Dataset.from_dict({"content": ["하나", "둘", "셋"]}).save_to_disk(str(tmp_path / "ds"))
    recs, errors = _read_all([InputSpec(path=str(tmp_path / "ds"), text_field="content")])
    assert [r.text for r in recs] == ["하나", "둘", "셋"] and not errors
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"content": ["a"]}),
            "test": datasets.Dataset.from_dict({"content": ["b"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    recs, _ = _read_all([InputSpec(path=str(tmp_path / "dd"), text_field="content", split="test")])
    assert [r.text for r in recs] == ["b"]
    with pytest.raises(K1Error, match="no split 'dev'"):
        _read_all([InputSpec(path=str(tmp_path / "dd"), text_field="content", split="dev")])


@pytest.mark.parametrize("split_bytes", [7, 64, 1000])
def test_byte_range_units_read_every_line_once(tmp_path, split_bytes):
    from k1.data.read import InputSpec

    lines = [json.dumps({"text": f"문서 {i} " + "x" * (i % 13)}, ensure_ascii=False) for i in range(200)]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recs, errors = _read_all([InputSpec(path=str(tmp_path / "big.jsonl"))], split_bytes=split_bytes)
    assert [r.text for r in recs] == [json.loads(line)["text"] for line in lines] and not errors


# ----------------------------------------------------------------------------------------------
# the pipeline


def _tiny_bpe(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from k1.data.synthetic import _en_doc, _ko_doc

    rng = __import__("random").Random(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(
        [_ko_doc(rng, 4) for _ in range(50)] + [_en_doc(rng, 4) for _ in range(50)], trainer
    )
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eos|>"}))
    return path


def _config(tmp_path: Path, out: str, tok: Path, **extra) -> dict:
    cfg = {
        "out": str(tmp_path / out),
        "tasks": 2,
        "workers": 2,
        "progress": False,
        "keep_work": True,
        "synthetic": {"docs": 150, "seed": 3},
        "pii": {"canaries": ["내 비밀 카나리아 문장 zebra-42"]},
        "tokenize": {"tokenizer": str(tok), "shard_tokens": 3000, "validation": 0.1},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from k1.data import prepare

    tmp = tmp_path_factory.mktemp("pipeline")
    tok = _tiny_bpe(tmp / "tok")
    # a user canary planted in a document of an extra input
    (tmp / "extra").mkdir()
    (tmp / "extra" / "mine.jsonl").write_text(
        json.dumps(
            {"text": "오늘 회의록입니다. 참석자 모두 확인했습니다. 내 비밀 카나리아 문장 zebra-42 끝."},
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    inputs = [{"path": str(tmp / "extra")}]
    first = prepare(_config(tmp, "a", tok, inputs=inputs))
    second = prepare(_config(tmp, "b", tok, inputs=inputs, workers=1))
    return tmp, tok, inputs, first, second


def _shard_hashes(out: Path) -> list[tuple[str, str]]:
    m = json.loads((out / "manifest.json").read_text())
    return [(s["file"], s["sha256"]) for split in m["splits"].values() for s in split]


def test_pipeline_outputs_and_report(runs):
    from k1.data.shard import ShardDataset, load_tokenizer

    tmp, tok, _, result, _ = runs
    out = tmp / "a"
    assert result["documents"]["train"] > 50 and result["tokens"]["train"] > 1000
    assert result["drops"].get("exact_duplicate", 0) >= 5 and result["drops"].get("near_duplicate", 0) >= 3
    assert (
        result["drops"].get("too_short", 0) >= 1 and result["errors"] >= 2
    )  # corrupt file + broken json line
    assert sum(result["pii"].values()) >= 10 and result["languages"]["ko"] > 0
    # canaries: the user's sentence is not PII, so it reaches the shards and must be reported;
    # the generated PII canaries must not.
    assert result["canaries"]["planted"] == 5 and result["canaries"]["leaked_ids"] == [0]
    report = (out / "report.md").read_text()
    for section in (
        "## Stages",
        "## Drop reasons",
        "## PII",
        "## Duplicate clusters",
        "## Language mix",
        "LEAKED",
    ):
        assert section in report
    for png in ("stages.png", "drops.png", "pii.png", "languages.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    ds = ShardDataset(out / "manifest.json", "train", verify=True)
    assert ds.dtype == np.uint16 and ds.num_tokens == result["tokens"]["train"]
    info = load_tokenizer(tok)
    docs = [d for i in range(len(ds)) for d in ds.documents(i)]
    assert len(docs) == result["documents"]["train"]
    text = "\n".join(info.tokenizer.decode(d.tolist()) for d in docs)
    from k1.data.synthetic import canary_values

    for canary in canary_values(3):
        assert canary not in text
    assert "<|pii:" in text
    windows = list(ds.iter_windows(64))
    assert windows and all(len(w) == 65 for w in windows)


def test_pipeline_is_deterministic_across_worker_counts(runs):
    tmp, *_ = runs
    assert _shard_hashes(tmp / "a") == _shard_hashes(tmp / "b")


def test_pipeline_resumes_after_a_kill(runs):
    """Simulates a kill inside the shard stage of task 1: its first shard finished, the rest not, a
    half-written temp file and an orphan shard without sidecar on disk. The rerun keeps the finished
    shard, never lists the half-written files, and produces the same manifest."""
    from k1.data import prepare

    tmp, tok, inputs, *_ = runs
    out = tmp / "a"
    before = _shard_hashes(out)
    shards = out / "shards"
    later = sorted(shards.glob("train-00001-*.bin"))[1:]
    assert later, "need a task with several shards"
    for f in later:
        f.unlink()
        (f.parent / (f.name + ".json")).unlink()
    later[0].write_bytes(b"half")  # an unfinished shard: no sidecar
    (shards / ".tmp-train-00001-00009.bin-123").write_bytes(b"partial")
    for stage in ("shards", "finalize"):
        for marker in (out / "work" / "logs" / stage / "completions").glob("*"):
            if stage == "finalize" or marker.name == "00001":
                marker.unlink()
    (out / "manifest.json").unlink()
    prepare(_config(tmp, "a", tok, inputs=inputs))
    assert _shard_hashes(out) == before
    assert not list(shards.glob(".tmp-*"))
    stats = json.loads((out / "work" / "logs" / "shards" / "stats" / "00001.json").read_text())
    resumed = [s["stats"].get("resumed_docs", 0) for s in stats if s["name"].endswith("shards")][0]
    assert resumed and (resumed if isinstance(resumed, int | float) else resumed["total"]) > 0


def test_corrupt_or_missing_shard_is_named(runs, tmp_path):
    import shutil

    from k1.data.shard import ShardDataset, read_manifest

    src, *_ = runs
    out = tmp_path / "copy"
    shutil.copytree(src / "a" / "shards", out / "shards")
    shutil.copy(src / "a" / "manifest.json", out / "manifest.json")
    first = sorted((out / "shards").glob("train-*.bin"))[0]
    data = bytearray(first.read_bytes())
    data[0] ^= 0xFF
    first.write_bytes(bytes(data))
    read_manifest(out)  # sizes still fine
    with pytest.raises(K1Error, match=first.name):
        ShardDataset(out / "manifest.json", verify=True)
    first.write_bytes(bytes(data[:-2]))
    with pytest.raises(K1Error, match="truncated"):
        read_manifest(out)
    first.unlink()
    with pytest.raises(K1Error, match="missing"):
        read_manifest(out)


def test_changed_config_refuses_the_same_out(runs):
    from k1.data import prepare

    tmp, tok, inputs, *_ = runs
    with pytest.raises(K1Error, match="different config"):
        prepare(_config(tmp, "a", tok, inputs=inputs, seed=7))


def test_config_errors_name_the_key(tmp_path):
    from k1.data.pipeline import DataConfig

    with pytest.raises(ConfigError, match="unknown key 'tresholds'"):
        DataConfig.from_dict({"synthetic": {"docs": 1}, "dedup": {"tresholds": 0.5}})
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        DataConfig.from_dict({"synthetic": {"docs": 1}, "dedup": {"treshold": 0.5}})
    with pytest.raises(ConfigError, match="quality.ko.min_chars: expected an integer"):
        DataConfig.from_dict({"synthetic": {"docs": 1}, "quality": {"ko": {"min_chars": "ten"}}})
    with pytest.raises(ConfigError, match="executor.kind"):
        DataConfig.from_dict({"synthetic": {"docs": 1}, "executor": {"kind": "kubernetes"}})
    cfg = DataConfig.from_toml(Path(__file__).parents[1] / "recipes" / "data_demo.toml")
    assert cfg.synthetic.docs > 0 and cfg.quality["ko"].min_hangul_ratio == 0.3  # defaults merged
    bad = tmp_path / "bad.toml"
    bad.write_text("out = [")
    run = subprocess.run(
        [sys.executable, "-m", "k1", "data", "prepare", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 2 and "invalid TOML" in run.stderr and "Traceback" not in run.stderr


def test_dtype_by_vocabulary():
    from k1.data.shard import dtype_for

    assert dtype_for(65536) == np.uint16 and dtype_for(65537) == np.uint32


def test_tokenizer_loaded_through_k1_tokenizer_when_present(tmp_path, monkeypatch):
    """When k1.tokenizer exists its load() is used (and may wrap the tokenizers object)."""
    import types

    from tokenizers import Tokenizer

    from k1.data.shard import load_tokenizer, write_byte_tokenizer

    d = write_byte_tokenizer(tmp_path / "tok")
    calls = []

    class Wrapper:
        def __init__(self, t):
            self.backend_tokenizer = t

    fake = types.ModuleType("k1.tokenizer")
    fake.load = lambda p: calls.append(p) or Wrapper(Tokenizer.from_file(str(Path(p) / "tokenizer.json")))
    monkeypatch.setitem(sys.modules, "k1.tokenizer", fake)
    import k1

    monkeypatch.setattr(k1, "tokenizer", fake, raising=False)
    info = load_tokenizer(d, separator="")
    assert calls and info.separator == "<|endoftext|>" and info.vocab_size == 257
    with pytest.raises(K1Error, match="not in the vocabulary"):
        load_tokenizer(d, separator="<|nope|>")


def test_scrub_is_importable_without_datatrove():
    code = "import sys, k1.data; k1.data.scrub('x 010-2345-6789'); print('datatrove' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_validation_split_is_a_stable_hash():
    from k1.data.steps import is_validation

    picks = [is_validation(f"doc-{i}", 0.1, 0) for i in range(2000)]
    assert 120 < sum(picks) < 280
    assert picks == [is_validation(f"doc-{i}", 0.1, 0) for i in range(2000)]
