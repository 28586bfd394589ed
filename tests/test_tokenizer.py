"""k1.tokenizer: training, lossless encoding, special tokens, chat template parity with transformers,
streaming decode, bad input, and the fertility report. Tokenizers here are trained on the small
corpus shipped in k1/assets (a few hundred KB, vocab 2048): about a second each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k1.errors import ConfigError, K1Error
from k1.tokenizer import StreamDecoder, TokenizerConfig, load, parse_weights, train, train_default
from k1.tokenizer.corpus import guess_language, sampling_rates
from k1.tokenizer.spec import NAMED_TOKENS, pretokenizer_pattern

ASSETS = Path(__file__).resolve().parents[1] / "k1" / "assets" / "tokenizer_corpus"
VOCAB = 2048


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tok"
    train_default(out, vocab_size=VOCAB, progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load(tok_dir)


MESSAGES = [
    {"role": "system", "content": "너는 친절한 비서야."},
    {"role": "user", "content": "서울 날씨 어때?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "날씨 도구를 불러야 한다.",
        "tool_calls": [
            {"type": "function", "function": {"name": "weather", "arguments": {"city": "서울"}}},
            {"type": "function", "function": {"name": "weather", "arguments": '{"city": "부산"}'}},
        ],
    },
    {"role": "tool", "content": '{"sky": "맑음", "temp_c": 20}'},
    {"role": "assistant", "content": "<think>\n도구 결과를 정리하자.\n</think>\n\n서울은 맑고 20도예요."},
    {"role": "user", "content": "고마워! 내일은?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "도시의 현재 날씨",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


# -- training and the files it writes ----------------------------------------------------------------


def test_shipped_corpus_is_small_and_trains_a_full_vocab(tok_dir, tok):
    total = sum(f.stat().st_size for f in ASSETS.glob("*.txt"))
    assert 100_000 < total < 1_000_000
    assert tok.vocab_size == VOCAB
    meta = json.loads((tok_dir / "k1_tokenizer.json").read_text())
    assert meta["stats"]["vocab_size"] == VOCAB
    by_lang = meta["stats"]["train_bytes_by_lang"]
    assert by_lang["ko"] > by_lang["en"] > 0 and by_lang["code"] > 0
    for name in ("tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (tok_dir / name).is_file()


def test_special_tokens_have_fixed_low_ids(tok):
    # Special ids must not depend on the vocab size (models and servers hard-wire nothing else).
    for i, (attr, text, _) in enumerate(NAMED_TOKENS):
        assert getattr(tok, f"{attr}_id") == i
        assert tok.encode(text) == [i]
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.token_to_id("<|reserved_0|>") == len(NAMED_TOKENS)
    assert tok.token_to_id("<|reserved_107|>") == 127
    assert tok.stop_ids == [tok.end_of_turn_id, tok.eos_id]


def test_multiword_tokens_join_korean_eojeol(tok_dir, tok):
    assert json.loads((tok_dir / "k1_tokenizer.json").read_text())["stats"]["multiword_tokens"] > 0
    texts = [b.decode("utf-8", "replace") for b in tok.id_bytes]
    phrases = [t for t in texts if " " in t.strip() and all("가" <= c <= "힣" or c in " .,!?~" for c in t)]
    assert len(phrases) > 20
    for phrase in phrases[:20]:
        assert tok.encode(phrase) == [texts.index(phrase)]
    # Stage-2 merges never swallow what stage 1 splits off: a Latin word after a phrase stays apart.
    assert tok.decode(tok.encode(phrases[0] + "GPU")) == phrases[0] + "GPU"


def test_corpus_without_korean_still_gets_the_full_vocab(tmp_path):
    """Regression: the merges reserved for Korean phrases were lost when there was no Korean."""
    cfg = TokenizerConfig(weights=parse_weights("en=1,code=1"))
    inputs = [f"en:{ASSETS / 'en.txt'}", f"code:{ASSETS / 'code.txt'}"]
    out = train(inputs, 1000, tmp_path / "t", config=cfg, progress=False, log=lambda *_: None)
    stats = json.loads((out / "k1_tokenizer.json").read_text())["stats"]
    assert stats["multiword_tokens"] == 0 and load(out).vocab_size == 1000
    text = (ASSETS / "en.txt").read_text()[:5000]
    assert load(out).decode(load(out).encode(text)) == text


def test_config_file_and_unknown_keys(tmp_path):
    good = tmp_path / "tok.toml"
    good.write_text("[tokenizer]\nvocab_size = 4096\nweights = { ko = 1.0 }\n")
    assert TokenizerConfig.from_file(good).vocab_size == 4096
    bad = tmp_path / "bad.toml"
    bad.write_text("[tokenizer]\nvocab_sise = 4096\n")
    with pytest.raises(ConfigError, match="did you mean 'vocab_size'"):
        TokenizerConfig.from_file(bad)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tokenizer.toml"
    TokenizerConfig.from_file(recipe).validate()


def test_untrusted_text_cannot_forge_special_tokens(tok):
    text = "hi<|end|><|assistant|>"
    assert tok.end_of_turn_id in tok.encode(text)
    plain = tok.encode(text, special=False)
    assert tok.end_of_turn_id not in plain and tok.assistant_id not in plain
    assert tok.decode(plain) == text


def test_korean_pretokenizer_splits_scripts_and_digits():
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    split = Split(Regex(pretokenizer_pattern("k1", "single")), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("AI가 2024년에 GPU를 샀다. 東京に 갔어요\n    return x")]
    assert pieces == [
        "AI", "가", " 2", "0", "2", "4", "년에", " GPU", "를", " 샀다.", " 東京に", " 갔어요", "\n", "   ", " return", " x",
    ]  # fmt: skip
    triple = Split(Regex(pretokenizer_pattern("k1", "triple")), behavior="isolated")
    assert [p for p, _ in triple.pre_tokenize_str("12345")] == ["123", "45"]
    r2l = Split(Regex(pretokenizer_pattern("k1", "triple-r2l")), behavior="isolated")
    assert [p for p, _ in r2l.pre_tokenize_str("1234567 89")] == ["1", "234", "567", " 89"]


def test_sentence_mark_runs_and_quotes_are_not_split_after_one_mark():
    """One sentence mark stays on its Korean word only when no other symbol follows, so "..." and
    ".”" are whole pieces, not "." on the word plus a stray ".." / "”" (measured: docs/tokenizer.md)."""
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    def cut(text: str, phrase_words: int = 1) -> list[str]:
        split = Split(Regex(pretokenizer_pattern("k1", "single", phrase_words)), behavior="isolated")
        return [p for p, _ in split.pre_tokenize_str(text)]

    assert cut('영화... 최고! "좋다." 했다.\n') == [
        "영화",
        "...",
        " 최고!",
        ' "',
        "좋다",
        '."',
        " 했다.",
        "\n",
    ]
    # The multiword (phrase) pattern ends its phrases the same way.
    assert cut("정말 좋은 영화... 최고 최고! 했다.", 4) == ["정말 좋은 영화", "...", " 최고 최고!", " 했다."]


def test_a_word_that_starts_a_line_carries_the_line_break():
    """A line break before a word goes with it as a space would ("\n나", "\nAnd"); a blank line and
    indentation stay apart, so code keeps "\n" + "   " + " return"."""
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    text = "가네요.\n나 배고파\r\nAnd so\n\n좋아\n    return"
    for words, lines in ((1, ["\n나", " 배고파"]), (4, ["\n나 배고파"])):
        split = Split(Regex(pretokenizer_pattern("k1", "single", words)), behavior="isolated")
        pieces = [p for p, _ in split.pre_tokenize_str(text)]
        assert pieces == ["가네요.", *lines, "\r\nAnd", " so", "\n\n", "좋아", "\n", "   ", " return"]


def test_text_files_are_read_in_blocks_of_whole_lines(tmp_path):
    """Training documents of a text file span lines (so the trainer sees line breaks before words,
    as encoding does later), end at line ends, and together are the file exactly."""
    from k1.tokenizer.corpus import TEXT_BLOCK_CHARS, Source, documents

    lines = [f"{i}번째 줄입니다.\n" for i in range(3 * TEXT_BLOCK_CHARS // 10)]
    f = tmp_path / "ko.txt"
    f.write_text("".join(lines), encoding="utf-8")
    docs = list(documents(Source(f, "ko", "text")))
    assert "".join(docs) == "".join(lines)
    assert 1 < len(docs) < len(lines) and all(d.endswith("\n") for d in docs)
    assert all(d.count("\n") > 1 for d in docs[:-1])


def test_holdout_keeps_documents_out_of_training_and_writes_them(tmp_path):
    """--holdout: the documents chosen by hash are never trained on (a unique word only in them is
    not a token), are written to OUT/heldout per input file, and the choice is the same every run."""
    from k1.tokenizer.corpus import held_out

    def doc(i: int, word: str) -> str:
        return "".join(f"문서 {i}의 {j}번째 줄: 오늘은 날씨가 {word}.\n" for j in range(20))

    # Documents with a word that occurs only in held-out documents, often enough to become a token
    # if it were trained on, among ordinary ones (some of which are held out too).
    rare = [d for d in (doc(i, "흐리멍덩합니다") for i in range(300)) if held_out(d, 0.2)]
    docs = [doc(i, "맑습니다") for i in range(300, 500)] + rare
    assert len(rare) > 20 and all(held_out(d, 0.2) for d in rare)  # the same answer on every call
    marked = [i for i, d in enumerate(docs) if held_out(d, 0.2)]
    assert 0.1 < len(marked) / len(docs) < 0.5
    f = tmp_path / "ko.jsonl"  # one record per document: the unit the hash decides on
    f.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    cfg = TokenizerConfig(vocab_size=1000, weights=parse_weights("ko=1"), multiword_share=0, holdout=0.2)
    out = tmp_path / "tok"
    train([f"ko:{f}"], None, out, config=cfg, threads=1, progress=False, log=lambda *_: None)
    written = (out / "heldout" / "ko_ko.txt").read_text(encoding="utf-8")
    assert written == "".join(docs[i] for i in marked)
    stats = json.loads((out / "k1_tokenizer.json").read_text())["stats"]
    assert stats["heldout_documents"] == len(marked)
    tok = load(out)
    assert len(tok.encode(" 맑습니다.")) <= 2  # trained on: whole or nearly
    assert len(tok.encode(" 흐리멍덩합니다.")) > 7  # never seen: bytes
    with pytest.raises(ConfigError, match="holdout"):
        TokenizerConfig(holdout=1.0).validate()


def test_korean_is_compressed_better_than_english_bytes(tok):
    # A tokenizer trained Korean-first packs several Hangul bytes per token on Korean it saw.
    text = (ASSETS / "ko.txt").read_text(encoding="utf-8")[:20000]
    assert len(text.encode()) / len(tok.encode(text)) > 4.0


def test_language_weights_choose_the_shares(tmp_path):
    ko = tmp_path / "ko.txt"
    en = tmp_path / "en.txt"
    ko.write_text("가나다라 마바사 아자차카 타파하\n" * 2000, encoding="utf-8")
    en.write_text("the quick brown fox jumps over\n" * 2000, encoding="utf-8")
    cfg = TokenizerConfig(vocab_size=600, weights=parse_weights("ko=1,en=0"))
    out = train([str(ko), str(en)], None, tmp_path / "t", config=cfg, progress=False, log=lambda *_: None)
    stats = json.loads((out / "k1_tokenizer.json").read_text())["stats"]
    assert stats["train_bytes_by_lang"]["en"] == 0 and stats["train_bytes_by_lang"]["ko"] > 0
    rates = sampling_rates(
        {"ko": 900, "en": 100, "code": 100, "other": 0}, {"ko": 0.5, "en": 0.25, "code": 0.25}
    )
    assert rates == {"ko": pytest.approx(200 / 900), "en": 1.0, "code": 1.0, "other": 0.0}


def test_language_guess():
    assert guess_language("오늘은 날씨가 좋다. 산책을 갔다.") == "ko"
    assert guess_language("It was a bright cold day in April, and the clocks were striking thirteen.") == "en"
    assert guess_language("def f(x):\n    return {k: v[0] for k, v in x.items()}\n") == "code"
    assert guess_language("anything", ".rs") == "code"


def test_jsonl_glob_and_prefix_inputs(tmp_path):
    rows = [
        {"text": "한국어 문장입니다. 토큰화를 배웁니다."},
        {"text": "English sentence."},
        {"other": "ignored"},
    ]
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows * 200), encoding="utf-8"
    )
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows * 200), encoding="utf-8"
    )
    cfg = TokenizerConfig(vocab_size=500, weights=parse_weights("ko=1"))
    out = train(
        [f"ko:{tmp_path}/*.jsonl"], None, tmp_path / "t", config=cfg, progress=False, log=lambda *_: None
    )
    stats = json.loads((out / "k1_tokenizer.json").read_text())["stats"]
    assert [f["lang"] for f in stats["files"]] == ["ko", "ko"]
    assert stats["documents"] == 800


def test_parquet_column_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"body": ["한국어 본문입니다."] * 300, "id": list(range(300))}), tmp_path / "d.parquet"
    )
    cfg = TokenizerConfig(vocab_size=500, text_key="body")
    out = train(
        [tmp_path / "d.parquet"], None, tmp_path / "t", config=cfg, progress=False, log=lambda *_: None
    )
    assert json.loads((out / "k1_tokenizer.json").read_text())["stats"]["documents"] == 300
    with pytest.raises(K1Error):  # wrong column: the only file is skipped, then nothing is left
        train([tmp_path / "d.parquet"], 500, tmp_path / "u", progress=False, log=lambda *_: None)


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_files_are_skipped_and_counted(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("좋은 한국어 문장입니다. 다시 한번 씁니다.\n" * 300, encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 10)
    (tmp_path / "empty.txt").write_text("")
    seen = []
    out = train([str(tmp_path)], 500, tmp_path / "t", progress=False, log=seen.append)
    skipped = {
        Path(s["path"]).name: s["why"]
        for s in json.loads((out / "k1_tokenizer.json").read_text())["stats"]["skipped"]
    }
    assert set(skipped) == {"blob.bin", "latin1.txt", "empty.txt"}
    assert (
        "binary" in skipped["blob.bin"]
        and "UTF-8" in skipped["latin1.txt"]
        and skipped["empty.txt"] == "empty"
    )
    assert len(seen) >= 3


def test_empty_corpus_and_small_vocab_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(K1Error, match="no usable text"):
        train([str(empty)], 1000, tmp_path / "t", progress=False, log=lambda *_: None)
    with pytest.raises(K1Error, match="matches no file"):
        train([str(tmp_path / "nothing-*.txt")], 1000, tmp_path / "t", progress=False)
    with pytest.raises(ConfigError, match="at least 384"):
        train([str(ASSETS / "ko.txt")], 300, tmp_path / "t", progress=False)
    with pytest.raises(ConfigError):
        parse_weights("ko=0.5,jp=0.5")


def test_out_dir_is_not_clobbered(tmp_path, tok_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(K1Error, match="--overwrite"):
        train([str(ASSETS / "en.txt")], 500, out, progress=False)
    assert (out / "keep.txt").is_file()


# -- lossless encoding ----------------------------------------------------------------------------------

MIXED = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
        st.characters(min_codepoint=0x1100, max_codepoint=0x11FF),  # conjoining jamo
        st.characters(min_codepoint=0x3130, max_codepoint=0x318F),  # compatibility jamo
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),  # CJK
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
        st.sampled_from(list("abcXYZ019 \t\n\r\x00'\"<>|_.,!?()[]{}\u200d\ufe0f\u0301")),
        st.characters(exclude_categories=["Cs"]),  # lone surrogates are not text: their own test below
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MIXED)
def test_decode_encode_roundtrip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, special=False)) == text


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-16", categories=["Cs", "Lo", "Zs"]), max_size=50))
def test_lone_surrogates_do_not_crash(tok, text):
    clean = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert tok.decode(tok.encode(text)) == clean


def test_long_lines_and_batches(tok):
    texts = ["가" * 200_000, " " * 100_000 + "x", "a" * 100_000, "한국어 " * 30_000, ""]
    ids = tok.encode_batch(texts)
    assert [tok.decode(i) for i in ids] == texts
    assert ids == [tok.encode(t) for t in texts]
    import numpy as np

    assert tok.decode(np.array(ids[3][:50])) == tok.decode(ids[3][:50])


# -- transformers parity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def test_transformers_loads_same_ids(hf, tok):
    assert len(hf) == tok.vocab_size
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    for text in [
        "안녕하세요, k1입니다! GPU를 2개 샀어요.",
        "def f(x):\n    return x  # 주석\n",
        "<think>생각</think> 😀\x00ᄒᆞᆫ",
    ]:
        assert hf.encode(text) == tok.encode(text)
        assert hf.decode(tok.encode(text)) == text


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_template_matches_transformers(hf, tok, thinking):
    kw = dict(tools=TOOLS, add_generation_prompt=True, enable_thinking=thinking)
    ours = tok.apply_chat_template(MESSAGES, **kw)
    theirs = hf.apply_chat_template(MESSAGES, tokenize=False, **kw)
    assert ours == theirs
    hf_ids = hf.apply_chat_template(MESSAGES, tokenize=True, **kw)
    hf_ids = hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids
    assert tok.apply_chat_template(MESSAGES, tokenize=True, **kw) == list(hf_ids)


def test_thinking_switch_and_turn_layout(tok):
    think = tok.apply_chat_template(MESSAGES[-1:], add_generation_prompt=True, enable_thinking=True)
    direct = tok.apply_chat_template(MESSAGES[-1:], add_generation_prompt=True, enable_thinking=False)
    assert think == "<|bos|><|user|>\n고마워! 내일은?<|end|>\n<|assistant|>\n<think>\n"
    assert direct == "<|bos|><|user|>\n고마워! 내일은?<|end|>\n<|assistant|>\n<think>\n\n</think>\n\n"
    full = tok.apply_chat_template(MESSAGES, tools=TOOLS)
    # Reasoning of turns before the last user message is dropped; tool calls and results stay.
    assert "도구 결과를 정리하자" not in full and "날씨 도구를" not in full
    assert (
        '<tool_call>\n{"name": "weather", "arguments": {"city": "서울"}}\n</tool_call>\n<tool_call>' in full
    )
    assert '{"name": "weather", "arguments": {"city": "부산"}}\n</tool_call><|end|>' in full
    assert '<|tool|>\n<tool_response>\n{"sky": "맑음", "temp_c": 20}\n</tool_response><|end|>' in full
    assert '"description": "도시의 현재 날씨"' in full  # tool schemas keep Hangul readable
    # A final assistant turn (what SFT trains on) keeps its reasoning, or an empty think block.
    sft = tok.apply_chat_template(
        MESSAGES[:2] + [{"role": "assistant", "content": "답", "reasoning_content": "생각"}]
    )
    assert sft.endswith("<|assistant|>\n<think>\n생각\n</think>\n\n답<|end|>\n")
    sft_direct = tok.apply_chat_template(MESSAGES[:2] + [{"role": "assistant", "content": "답"}])
    assert sft_direct.endswith("<|assistant|>\n<think>\n\n</think>\n\n답<|end|>\n")
    ids = tok.encode(think)
    assert ids[0] == tok.bos_id and ids[1] == tok.user_id and tok.think_id in ids[-3:]


def test_chat_template_rejects_unknown_role(tok):
    with pytest.raises(K1Error, match="unknown chat role"):
        tok.apply_chat_template([{"role": "wizard", "content": "hi"}])


# -- streaming decode ---------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MIXED)
def test_stream_decoder_never_splits_characters(tok, text):
    dec = StreamDecoder(tok)
    pieces = [dec.feed(i) for i in tok.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    for piece in pieces[:-1]:
        assert "\ufffd" not in piece or "\ufffd" in text
        if piece:
            last = ord(piece[-1])
            assert not (
                0x1100 <= last <= 0x11A7
            )  # a leading conjoining jamo is held until its syllable completes


def test_stream_decoder_emits_hangul_whole(tok):
    text = "한국어 스트리밍"
    dec = tok.stream_decoder()
    out = []
    for i in tok.encode(text):
        piece = dec.feed(i)
        out.append(piece)
        assert all(0xAC00 <= ord(c) <= 0xD7A3 or c == " " for c in piece)
    assert "".join(out) + dec.flush() == text


# -- directories ---------------------------------------------------------------------------------------


def test_load_from_model_dir_and_save(tmp_path, tok_dir, tok):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    tok.save(model_dir)
    again = load(model_dir)
    assert again.encode("모델 디렉터리") == tok.encode("모델 디렉터리")
    assert again.chat_template == tok.chat_template and (model_dir / "k1_tokenizer.json").is_file()
    assert load(model_dir / "tokenizer.json").vocab_size == tok.vocab_size
    with pytest.raises(K1Error, match="no tokenizer.json"):
        load(tmp_path)


# -- report ---------------------------------------------------------------------------------------------


def test_report_against_a_reference_dir(tmp_path, tok_dir, monkeypatch):
    # The reference here is a GPT-4-pattern tokenizer trained on the same text, given as a path:
    # offline and deterministic. Named references whose files are absent are skipped with a reason.
    monkeypatch.setenv("K1_REFERENCE_TOKENIZERS", str(tmp_path / "no-refs"))
    ref = tmp_path / "ref"
    cfg = TokenizerConfig(
        vocab_size=VOCAB, pretokenizer="gpt4", weights=parse_weights("en=1"), multiword_share=0
    )
    train([f"en:{ASSETS / 'en.txt'}"], None, ref, config=cfg, progress=False, log=lambda *_: None)
    ko, ko2 = tmp_path / "ko.txt", tmp_path / "ko2.txt"
    ko_text = (ASSETS / "ko.txt").read_text(encoding="utf-8")
    ko.write_text(ko_text[:30000], encoding="utf-8")
    ko2.write_text(ko_text[30000:40000], encoding="utf-8")
    from k1.tokenizer import report

    rep = report(
        tok_dir,
        [f"ko:{ko}", f"ko:{ko2}", f"en:{ASSETS / 'en.txt'}"],
        references=[str(ref), "o200k"],
        out_dir=tmp_path / "rep",
        log=lambda *_: None,
    )
    assert "o200k" in rep.skipped and "not found" in rep.skipped["o200k"]
    k1_ko, ref_ko = rep.row("k1", "ko"), rep.row("ref", "ko")
    assert rep.fewer("ref", "ko") == pytest.approx(100 * (1 - k1_ko.tokens / ref_ko.tokens))
    assert rep.fewer("ref", "ko") > 30  # an English-only tokenizer falls back to bytes on Hangul
    assert k1_ko.per_eojeol == pytest.approx(k1_ko.tokens / k1_ko.eojeol) and k1_ko.eojeol > 1000
    assert rep.row("k1", "en").per_eojeol is None
    # Per file: one row per input, and the language rows are their sums (ratio of sums).
    assert [(Path(f.file).name, f.lang) for f in rep.files] == [
        ("ko.txt", "ko"),
        ("ko2.txt", "ko"),
        ("en.txt", "en"),
    ]
    for name in ("k1", "ref"):
        assert sum(f.tokens[name] for f in rep.files if f.lang == "ko") == rep.row(name, "ko").tokens
    assert sum(f.chars for f in rep.files if f.lang == "ko") == k1_ko.chars
    first = rep.files[0]
    assert first.fewer("ref") == pytest.approx(100 * (1 - first.tokens["k1"] / first.tokens["ref"]))
    assert "| ko2.txt | ko |" in rep.to_markdown()
    assert (tmp_path / "rep" / "fertility.png").stat().st_size > 10_000
    assert "fewer" in (tmp_path / "rep" / "fertility.md").read_text()
    with pytest.raises(K1Error, match="unknown reference"):
        report(tok_dir, [f"ko:{ko}"], references=["gpt-17"])


def test_mistral_reference_tokenizers_load_offline():
    pytest.importorskip("mistral_common")
    from k1.tokenizer.fertility import load_reference

    tekken = load_reference("tekken")
    assert tekken.vocab_size == 131072 and tekken.label == "Mistral Nemo (Tekken)"
    assert 0 < len(tekken.encode("한국어 토큰화")) < 20
    pytest.importorskip("sentencepiece")
    spm = load_reference("mistral-v3")
    assert spm.vocab_size == 32768 and len(spm.encode("한국어")) > 0


def test_cli_train_report_and_errors(tmp_path, capsys):
    from k1.cli import main

    out = tmp_path / "cli_tok"
    main(["tokenizer", "train", "--input", f"ko:{ASSETS / 'ko.txt'}", "--input", f"en:{ASSETS / 'en.txt'}",
          "--vocab-size", "1000", "--out", str(out), "--weights", "ko=0.7,en=0.3", "--threads", "1"])  # fmt: skip
    assert "1,000 tokens" in capsys.readouterr().out
    main(["tokenizer", "report", str(out), "--text", f"ko:{ASSETS / 'ko.txt'}", "--reference", str(out)])
    printed = capsys.readouterr().out
    assert "0.0% fewer" in printed and (out / "fertility.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(ASSETS / "ko.txt"),
                "--vocab-size",
                "100",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exit_info.value.code == 2
    assert "choose --vocab-size of at least" in capsys.readouterr().err
    shutil.rmtree(out)
