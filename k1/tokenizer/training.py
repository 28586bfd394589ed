"""Train a k1 tokenizer: byte-level BPE (Hugging Face `tokenizers`) over a language-weighted corpus."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from k1.atomic import replace_dir
from k1.errors import K1Error

from . import corpus as corpus_mod
from .core import CONFIG_FILE, K1_FILE, TOKENIZER_FILE, Tokenizer, load
from .spec import BOS, CHAT_TEMPLATE, EOS, PAD, TokenizerConfig, pretokenizer_pattern, special_tokens


def build_backend(config: TokenizerConfig):
    """An untrained tokenizers.Tokenizer with k1's pre-tokenizer and decoder (no normalizer: text is kept byte for byte)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(pretokenizer_pattern(config.pretokenizer, config.digits)), behavior="isolated"
            ),
            # use_regex=False: our Split already cut the text; ByteLevel only maps bytes to symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


@contextmanager
def _threads(n: int | None):
    """threads=1 keeps training on one core (TOKENIZERS_PARALLELISM is read on every call in tokenizers)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    if n == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    elif n:
        # Only takes effect if the rayon pool has not started yet in this process.
        os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    try:
        yield
    finally:
        if n == 1:
            if old is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = old


def train(
    inputs: list[str | Path],
    vocab_size: int | None = None,
    out_dir: str | Path = "runs/tokenizer",
    *,
    config: TokenizerConfig | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
) -> Path:
    """Train on `inputs` (files, folders, globs; `ko:`/`en:`/`code:` prefixes force a language) and
    write a tokenizer directory that k1 and transformers load with the same ids. Returns out_dir."""
    from tokenizers import AddedToken, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    config = dataclasses.replace(config or TokenizerConfig())  # a copy: the caller's object is left as it was
    if vocab_size is not None:
        config.vocab_size = vocab_size
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise K1Error(f"--out {out_dir} is a file; give a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise K1Error(
            f"--out {out_dir} already exists and is not empty; pass --overwrite or choose another directory"
        )

    start = time.perf_counter()
    corpus = corpus_mod.scan(inputs, config.text_key)
    for path, why in corpus.skipped:
        log(f"skipped {path}: {why}")
    if not corpus.sources:
        raise K1Error(
            f"no usable text in the {len(corpus.skipped)} input file(s) given ({_why(corpus.skipped)}); give UTF-8 text"
        )
    available = corpus.bytes_by_lang()
    rates = corpus_mod.sampling_rates(available, config.weights, config.max_bytes)
    per_file = corpus_mod.source_rates(corpus, rates, config.source_alpha, config.max_repeat)
    if not any(rates.values()):
        have = ", ".join(f"{k}={v}" for k, v in available.items() if v)
        raise K1Error(
            f"the language weights {config.weights} select none of the text found ({have} bytes); adjust --weights"
        )

    planned = ", ".join(
        f"{lang} {available[lang] * rates[lang] / 1e6:.1f} MB" for lang in available if rates[lang]
    )
    log(f"{len(corpus.sources)} file(s) read; training on {planned}")
    backend = build_backend(config)
    specials = special_tokens(config.special_block)
    # With multiword merges, stage 2 gets multiword_share of the merges; stage 1 learns the full
    # vocabulary anyway and its last merges are set aside, to be put back if stage 2 finds fewer
    # phrases than that (a corpus with little Korean still gets the vocabulary size asked for).
    merges_total = config.vocab_size - len(specials) - 256
    stage2_merges = int(config.multiword_share * merges_total)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t, _ in specials],
        initial_alphabet=ByteLevel.alphabet(),
        max_token_length=config.max_token_length,
        show_progress=progress,
    )
    stats: dict = {}
    expected = sum(int(available[lang] * rates[lang]) for lang in available)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Held-out documents are written while stage 1 reads the corpus, into a staging folder that
    # joins the output directory when it is moved into place (nothing half-written is left behind).
    heldout = (
        Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.heldout-"))
        if config.holdout
        else None
    )
    try:
        with _threads(threads):
            backend.train_from_iterator(
                corpus_mod.sample_documents(
                    corpus, per_file, config.text_key, config.seed, stats, config.holdout, heldout
                ),
                trainer,
                length=None,
            )
        if not stats.get("documents"):
            raise K1Error("the inputs held no documents after sampling; give more text or change --weights")

        data = json.loads(backend.to_str())
        if stage2_merges:
            log(
                f"stage 2: {stage2_merges:,} merges over Korean phrases of up to {config.multiword_max_words} eojeol"
            )
            with _threads(threads):
                docs = corpus_mod.sample_documents(
                    corpus, per_file, config.text_key, config.seed, {}, config.holdout
                )
                spare = set_aside_last_merges(data, stage2_merges)
                stats["multiword_tokens"] = add_multiword_merges(
                    data, docs, config, stage2_merges, spare, progress
                )
    except BaseException:
        if heldout is not None:
            shutil.rmtree(heldout, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    # The trainer registers every special token as "special"; the think and tool tags are markup
    # users should see in decoded text (skip_special_tokens keeps them), so unmark those.
    markup = {t for t, special in specials if not special}
    for entry in data["added_tokens"]:
        entry["special"] = entry["content"] not in markup
    # A piece that is a whole token is taken as is instead of being rebuilt merge by merge (as in
    # LLaMA 3): same ids on our corpora, ~10% faster encoding, and transformers reads the flag too.
    data["model"]["ignore_merges"] = True
    tokenizer_json = json.dumps(data, ensure_ascii=False)
    actual = len(data["model"]["vocab"]) + sum(
        1 for e in data["added_tokens"] if e["id"] >= len(data["model"]["vocab"])
    )

    hf_config = {
        # transformers 5 maps this to its tokenizers-backed class; the same dir loads in 4.x.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        # Spaces are part of the byte-level tokens; "cleaning" them would break decode(encode(x)) == x.
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.model_max_length,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    summary = {
        "format": "k1-tokenizer/1",
        "config": config.to_dict(),
        "stats": {
            "vocab_size_requested": config.vocab_size,
            "vocab_size": actual,
            "train_bytes_by_lang": stats.get("bytes_by_lang", {}),
            "train_bytes": sum(stats.get("bytes_by_lang", {}).values()),
            "available_bytes_by_lang": available,
            "expected_bytes": expected,
            "documents": stats.get("documents", 0),
            "multiword_tokens": stats.get("multiword_tokens", 0),
            "heldout_documents": stats.get("heldout_documents", 0),
            "heldout_files": stats.get("heldout_files", []),
            "files": [
                {"path": str(s.path), "lang": s.lang, "bytes": s.nbytes, "rate": round(per_file[s.path], 4)}
                for s in corpus.sources
            ],
            "skipped": [{"path": p, "why": w} for p, w in corpus.skipped + stats.get("skipped_late", [])],
            "seconds": round(seconds, 2),
            "threads": threads or os.cpu_count(),
        },
    }

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        if heldout is not None:
            os.replace(heldout, tmp / "heldout")
        (tmp / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(
            json.dumps(hf_config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / K1_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_card(summary), encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if heldout is not None:
            shutil.rmtree(heldout, ignore_errors=True)
        raise
    if stats.get("heldout_documents"):
        log(
            f"held out {stats['heldout_documents']:,} documents in {out_dir / 'heldout'}; measure on them with "
            f"`k1 tokenizer report {out_dir} --text '{out_dir / 'heldout'}/*.txt'`"
        )
    if actual < config.vocab_size:
        log(
            f"note: the corpus supported only {actual} of the {config.vocab_size} tokens asked for (more text gives more merges)"
        )
    return out_dir


# Stage-1 token ids become single characters for stage 2; from U+20000 on there are no surrogates
# and no whitespace, so WhitespaceSplit can separate the phrases.
_ID_BASE = 0x20000
_MAX_IDS = 0x10FFFF - _ID_BASE
# Stage 2 holds its phrases in memory (4 bytes per stage-1 token); phrase statistics settle long
# before this many tokens, so a huge corpus only contributes its first part to stage 2.
MAX_STAGE2_TOKENS = 100_000_000


def set_aside_last_merges(data: dict, n: int) -> list[tuple[str, int, list[list[str]]]]:
    """Remove the n highest-id tokens (the last merges learned) from a BPE tokenizer JSON; returns
    them, lowest id first, as (token, id, merges that make it) so they can be put back."""
    model = data["model"]
    vocab, merges = model["vocab"], model["merges"]
    cut = len(vocab) - n
    spare = {t: i for t, i in vocab.items() if i >= cut}
    kept_vocab = {t: i for t, i in vocab.items() if i < cut}
    making: dict[str, list[list[str]]] = {}
    kept_merges = []
    for left, right in merges:
        if left + right in spare:
            making.setdefault(left + right, []).append([left, right])
        elif left in kept_vocab and right in kept_vocab:
            kept_merges.append([left, right])
    model["vocab"], model["merges"] = kept_vocab, kept_merges
    return sorted(((t, i, making.get(t, [])) for t, i in spare.items()), key=lambda x: x[1])


def add_multiword_merges(
    data: dict, docs, config: TokenizerConfig, n_merges: int, spare=(), progress: bool = False
) -> int:
    """Stage 2 of multiword (SuperBPE) training: continue BPE over Korean phrases. Extends the
    tokenizer JSON `data` in place (merges, vocab, pre-tokenizer) and returns the tokens added.

    If stage 2 adds fewer than n_merges tokens, tokens from `spare` (set aside from stage 1, lowest
    id first) are put back ahead of the stage-2 merges to make up the vocabulary size.

    Each phrase (up to multiword_max_words eojeol, as the final pre-tokenizer cuts it) is encoded
    with the stage-1 tokenizer, its ids turned into characters, and a second BPE trainer learns
    merges over those characters. Stage-1 merges never join across a space inside a Korean phrase
    (no stage-1 piece has a space after a letter), so at encoding time stage-1 merges rebuild the
    words first and the new merges, ranked after them, join words into phrases.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    vocab: dict[str, int] = data["model"]["vocab"]
    if len(vocab) + n_merges > _MAX_IDS:
        raise K1Error(f"multiword merges support vocabularies up to {_MAX_IDS:,} tokens; lower --vocab-size")
    stage1 = Tokenizer.from_str(json.dumps(data))
    pattern = pretokenizer_pattern(config.pretokenizer, config.digits, config.multiword_max_words)
    coarse = pre_tokenizers.Split(Regex(pattern), behavior="isolated")

    phrases: list[str] = []
    alphabet: set[int] = set()
    batch: list[str] = []
    held = 0

    def flush() -> int:
        n = 0
        for enc in stage1.encode_batch(batch, add_special_tokens=False):
            alphabet.update(enc.ids)
            phrases.append("".join(chr(_ID_BASE + i) for i in enc.ids))
            n += len(enc.ids)
        batch.clear()
        return n

    for doc in docs:
        for piece, _ in coarse.pre_tokenize_str(doc):
            if " " in piece.strip(" ") and not piece.isspace():  # a phrase of two or more eojeol
                batch.append(piece)
        if len(batch) >= 4096:
            held += flush()
            if held >= MAX_STAGE2_TOKENS:
                break
    if batch:
        flush()
    learned: list[list[str]] = []
    if phrases:
        stage2 = Tokenizer(models.BPE())
        stage2.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(
            vocab_size=len(alphabet) + n_merges, min_frequency=config.min_frequency, show_progress=progress
        )
        stage2.train_from_iterator(
            (" ".join(phrases[i : i + 1024]) for i in range(0, len(phrases), 1024)), trainer
        )
        learned = json.loads(stage2.to_str())["model"]["merges"]

    by_id = {i: t for t, i in vocab.items()}

    def text(chars: str) -> str:
        return "".join(by_id[ord(c) - _ID_BASE] for c in chars)

    phrase_merges = [(text(a), text(b)) for a, b in learned]
    new = {left + right for left, right in phrase_merges} - set(vocab)
    merges = data["model"]["merges"]
    # Make up a shortfall with stage-1 tokens, ranked before the phrase merges (which were learned
    # on top of stage 1 without them; any merge order gives a lossless tokenizer).
    for token, _, making in spare[: max(0, n_merges - len(new))]:
        if token in vocab:
            continue
        vocab[token] = len(vocab)
        merges.extend(m for m in making if m[0] in vocab and m[1] in vocab)
    added = 0
    for left, right in phrase_merges:
        merged = left + right
        if merged not in vocab:
            vocab[merged] = len(vocab)
            added += 1
        merges.append([left, right])
    split = data["pre_tokenizer"]["pretokenizers"][0]
    split["pattern"]["Regex"] = pattern
    return added


def _why(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "none found"
    shown = "; ".join(f"{Path(p).name}: {w}" for p, w in skipped[:3])
    return shown + ("; ..." if len(skipped) > 3 else "")


def _card(summary: dict) -> str:
    s, c = summary["stats"], summary["config"]
    langs = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in s["train_bytes_by_lang"].items() if v)
    return (
        "# k1 tokenizer\n\n"
        f"Byte-level BPE, {s['vocab_size']:,} tokens ({c['special_block']} special ids first, then 256 bytes, then merges); "
        f"pre-tokenizer `{c['pretokenizer']}`, digits `{c['digits']}`.\n\n"
        f"Trained on {s['train_bytes'] / 1e6:.2f} MB ({langs}; {s['documents']:,} documents) in {s['seconds']:.1f} s; "
        f"{len(s['skipped'])} file(s) skipped.\n\n"
        "```python\n"
        "from transformers import AutoTokenizer; tok = AutoTokenizer.from_pretrained(DIR)   # or\n"
        "import k1.tokenizer; tok = k1.tokenizer.load(DIR)\n"
        "```\n"
    )


def train_default(out_dir: str | Path, vocab_size: int = 4096, **kwargs) -> Tokenizer:
    """Train on the small corpus shipped with k1 (no downloads): for the demo and tests."""
    from importlib import resources

    path = resources.files("k1") / "assets" / "tokenizer_corpus"
    with resources.as_file(path) as folder:
        # Files are named for their language (ko.txt, en.txt, code.txt): no guessing needed.
        files = sorted(f"{p.stem}:{p}" for p in Path(folder).glob("*.txt"))
        config = kwargs.pop("config", None) or TokenizerConfig()
        train(files, vocab_size, out_dir, config=config, **kwargs)
    return load(out_dir)
