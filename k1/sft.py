"""Think / Non-Think supervised fine-tuning: chat data in, the training loop's batches out.

    k1 sft recipes/sft_demo.toml                 # = k1 train with objective "sft", data_format "chat"
    k1 sft recipes/sft_demo.toml --resume

SFT is the pretraining loop (k1/train.py: checkpoints, resume, progress, metrics, MoE balancing)
with a different batch source and objective. This module is the batch source, registered as the
"chat" data format:

* reads conversations: OpenAI-style `{"messages": [...]}` (jsonl / json), the instruction / input /
  output shape, or question / answer (/ reasoning) columns of CSV or jsonl, named in the config;
* picks each conversation's mode: `think_ratio` of the conversations are rendered with their
  reasoning (think mode), the rest without it (non-think mode); only conversations that carry
  reasoning can be think samples;
* renders each with the tokenizer's own chat template (the exact prompt the model sees at
  inference) and marks the tokens the model must produce: the assistant turns after the
  generation prompt, through the end-of-turn token (think mode: reasoning, </think>, answer;
  non-think mode: the answer after the template's empty think block);
* packs several conversations into each sequence; `segment_ids` keep them from attending to each
  other and `position_ids` restart at 0 for each (k1/objectives.py "sft" uses both).

Python: `k1.train.run(k1.sft.load_config("recipes/sft_demo.toml"))`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from k1.errors import ConfigError, K1Error
from k1.train import DATA_FORMATS, TrainConfig

# Limits on input: a record (one jsonl line, one CSV row) and a conversation's turns.
MAX_RECORD_CHARS = 4_000_000
MAX_TURNS = 1024
ROLES = ("system", "user", "assistant", "tool")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
# How many open sequences first-fit packing looks back over: near-optimal fill at O(n) cost.
PACK_LOOKBACK = 64


@dataclass
class Conversation:
    messages: list[dict]
    where: str
    """file:line, for messages about this conversation."""


# ------------------------------------------------------------------------------------- reading


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
        if not found:
            raise K1Error(f"{path}: no {', '.join(DATA_SUFFIXES)} files in this folder")
        return found
    if not path.is_file():
        raise K1Error(f"{path}: chat data not found")
    if path.suffix not in DATA_SUFFIXES:
        raise K1Error(f"{path}: unsupported chat data file; use {', '.join(DATA_SUFFIXES)}")
    return [path]


def _records(path: Path):
    """(where, record) for every record of a file."""
    if path.suffix in (".csv", ".tsv"):
        csv.field_size_limit(MAX_RECORD_CHARS)
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            try:
                for row in reader:
                    yield f"{path}:{reader.line_num}", row
            except csv.Error as err:
                raise K1Error(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
        return
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise K1Error(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, list):
            raise K1Error(f"{path}: expected a JSON list of conversations")
        for i, rec in enumerate(data):
            yield f"{path}[{i}]", rec
        return
    with open(path, encoding="utf-8", errors="strict") as f:
        n = 0
        while True:
            n += 1
            try:
                line = f.readline(MAX_RECORD_CHARS + 1)
            except UnicodeDecodeError:
                raise K1Error(f"{path}:{n}: not UTF-8 text") from None
            if not line:
                return
            if len(line) > MAX_RECORD_CHARS:
                raise K1Error(f"{path}:{n}: record longer than {MAX_RECORD_CHARS:,} characters")
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as err:
                raise K1Error(f"{path}:{n}: not valid JSON ({err.msg})") from None


def _text(value, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise K1Error(f"{where}: {field!r} must be text")
    return value


def to_messages(rec: Any, where: str, cfg: TrainConfig) -> list[dict]:
    """One record in any supported shape -> chat messages."""
    if not isinstance(rec, dict):
        raise K1Error(f"{where}: expected an object with messages, instruction/output or question/answer")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs or len(msgs) > MAX_TURNS:
            raise K1Error(f"{where}: 'messages' must be a list of 1..{MAX_TURNS} turns")
        out = []
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                role = m.get("role") if isinstance(m, dict) else m
                raise K1Error(
                    f"{where}: unknown role {role!r}; messages need role {', '.join(ROLES)} and content"
                )
            if not isinstance(m.get("content"), (str, list, type(None))) or not isinstance(
                m.get("reasoning_content"), (str, type(None))
            ):
                raise K1Error(f"{where}: a {m['role']} message's content and reasoning_content must be text")
            out.append(dict(m))
    elif "instruction" in rec and "output" in rec:
        prompt = _text(rec["instruction"], where, "instruction")
        extra = _text(rec.get("input"), where, "input")
        if extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        out = [
            {"role": "user", "content": prompt},
            _assistant(rec["output"], rec.get(cfg.reasoning_column), where),
        ]
    elif cfg.question_column in rec and cfg.answer_column in rec:
        out = [
            {"role": "user", "content": _text(rec[cfg.question_column], where, cfg.question_column)},
            _assistant(rec[cfg.answer_column], rec.get(cfg.reasoning_column), where),
        ]
    else:
        keys = ", ".join(sorted(map(str, rec))[:12])
        raise K1Error(
            f"{where}: no 'messages', 'instruction'+'output', or '{cfg.question_column}'+'{cfg.answer_column}' "
            f"(question_column / answer_column in the config); this record has: {keys}"
        )
    if cfg.system_prompt and out[0].get("role") != "system":
        out.insert(0, {"role": "system", "content": cfg.system_prompt})
    return out


def _assistant(answer, reasoning, where: str) -> dict:
    msg = {"role": "assistant", "content": _text(answer, where, "answer")}
    if isinstance(reasoning, str) and reasoning.strip():
        msg["reasoning_content"] = reasoning
    return msg


def read_conversations(path: str | os.PathLike, cfg: TrainConfig) -> list[Conversation]:
    out = []
    for f in _files(Path(path)):
        for where, rec in _records(f):
            out.append(Conversation(to_messages(rec, where, cfg), where))
    if not out:
        raise K1Error(f"{path}: no conversations")
    return out


# ------------------------------------------------------------------------------------- modes


def _reasoning(m: dict) -> str:
    r = m.get("reasoning_content")
    if isinstance(r, str) and r.strip():
        return r
    content = m.get("content")
    if isinstance(content, str) and "</think>" in content:
        return content.split("</think>")[0].split("<think>")[-1]
    return ""


def _final_turns(messages: list[dict]) -> list[dict]:
    """Assistant turns after the last user message: the ones the template renders with a think block."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return [m for m in messages[last_user + 1 :] if m.get("role") == "assistant"]


def has_reasoning(messages: list[dict]) -> bool:
    return any(_reasoning(m).strip() for m in _final_turns(messages))


def without_reasoning(messages: list[dict]) -> list[dict]:
    """The non-think form of a conversation: reasoning dropped, so the template writes an empty block."""
    out = []
    for m in messages:
        if m.get("role") == "assistant":
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            if isinstance(m.get("content"), str) and "</think>" in m["content"]:
                m["content"] = m["content"].split("</think>")[-1].lstrip("\n")
        out.append(m)
    return out


def choose_modes(convs: list[Conversation], ratio: float, seed: int) -> list[bool]:
    """Think mode for round(ratio x all) conversations (as near as the ones with reasoning allow), chosen
    at random among those that carry reasoning; the rest non-think."""
    able = [i for i, c in enumerate(convs) if has_reasoning(c.messages)]
    want = min(len(able), round(ratio * len(convs)))
    rng = np.random.default_rng([seed, 7])
    think = np.zeros(len(convs), dtype=bool)
    if want:
        think[rng.choice(able, size=want, replace=False)] = True
    return think.tolist()


# ------------------------------------------------------------------------------------- rendering


class ChatRenderer:
    """Renders conversations with a tokenizer's chat template and marks the assistant's tokens.

    What counts as the prompt of an assistant turn is read off the template itself, by rendering
    probe conversations: the generation prompt of each mode ("<|assistant|>\\n<think>\\n" and
    "<|assistant|>\\n<think>\\n\\n</think>\\n\\n" for k1's template) and the header of an earlier turn.
    Prompt and target pieces are tokenized separately, so the prompt's ids are exactly the ids
    the model gets at inference, and the target starts where generation starts.
    """

    def __init__(self, tok):
        self.tok = tok
        if tok.assistant_id is None or tok.end_of_turn_id is None:
            raise K1Error(
                f"{tok.path}: the tokenizer has no assistant / end-of-turn tokens; SFT needs k1's chat tokens"
            )
        self.open = tok.id_to_token(tok.assistant_id)
        self.close = tok.id_to_token(tok.end_of_turn_id)
        user = [{"role": "user", "content": "x"}]
        base = tok.apply_chat_template(user)
        self.gen_think = tok.apply_chat_template(user, add_generation_prompt=True, enable_thinking=True)[
            len(base) :
        ]
        self.gen_direct = tok.apply_chat_template(user, add_generation_prompt=True, enable_thinking=False)[
            len(base) :
        ]
        earlier = tok.apply_chat_template(
            user + [{"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]
        )
        turn = earlier[len(base) :]
        if not (turn.startswith(self.open) and self.gen_think.startswith(self.open) and "y" in turn):
            raise K1Error(
                f"{tok.path}: the chat template does not open assistant turns with {self.open}; "
                "use a k1 tokenizer"
            )
        self.header = turn[: turn.index("y")]
        # Control tokens (roles, end of turn, bos...) inside message text would forge turn boundaries.
        self.control = [tok.id_to_token(i) for i in sorted(tok.special_ids)]

    def forged(self, messages: list[dict]) -> bool:
        for m in messages:
            for v in (m.get("content"), m.get("reasoning_content")):
                if isinstance(v, str) and "<|" in v and any(t in v for t in self.control):
                    return True
        return False

    def pieces(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, is_target) pieces."""
        text = self.tok.apply_chat_template(messages)
        out, pos = [], 0
        start = text.find(self.open)
        while start >= 0:
            if text.startswith(self.gen_direct, start):
                head = len(self.gen_direct)
            elif text.startswith(self.gen_think, start):
                head = len(self.gen_think)
            elif text.startswith(self.header, start):
                head = len(self.header)
            else:
                head = len(self.open)
            end = text.find(self.close, start + head)
            end = len(text) if end < 0 else end + len(self.close)
            out.append((text[pos : start + head], False))
            out.append((text[start + head : end], True))
            pos = end
            start = text.find(self.open, pos)
        if pos < len(text):
            out.append((text[pos:], False))
        return [(t, target) for t, target in out if t]

    def render(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Token ids and loss mask (1 on the tokens the assistant must produce)."""
        ids, mask = [], []
        pieces = self.pieces(messages)
        for (_, target), piece_ids in zip(pieces, self.tok.encode_batch([t for t, _ in pieces]), strict=True):
            ids.extend(piece_ids)
            mask.extend([int(target)] * len(piece_ids))
        return ids, mask


# ------------------------------------------------------------------------------------- packing


class ChatRows:
    """Packed (or padded) rows of seq_len + 1 tokens with loss mask, segment ids and positions.

    Row g of the run is row perm_epoch[g mod n] (a seeded permutation per epoch), so a batch is a
    pure function of (seed, index): resuming needs no iterator state, as with token windows.
    """

    def __init__(self, ids, mask, seg, pos, seed: int, packed: bool):
        self.ids, self.mask, self.seg, self.pos = ids, mask, seg, pos
        self.seed, self.packed = seed, packed
        self.n = len(ids)
        self._perm: tuple[int, np.ndarray] | None = None

    def _rows(self, rows) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows)
        out = {
            "input_ids": torch.from_numpy(self.ids[rows].astype(np.int64)),
            "loss_mask": torch.from_numpy(self.mask[rows].astype(np.int64)),
        }
        if self.packed:
            out["segment_ids"] = torch.from_numpy(self.seg[rows].astype(np.int64))
            out["position_ids"] = torch.from_numpy(self.pos[rows].astype(np.int64))
        return out

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        rows = []
        for g in range(first, first + count):
            epoch, i = divmod(g, self.n)
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
            rows.append(int(self._perm[1][i]))
        return self._rows(rows)

    def fixed_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._rows([(first + j) % self.n for j in range(count)])

    def max_token_id(self) -> int:
        return int(self.ids.max())

    @property
    def target_tokens(self) -> int:
        return int(self.mask.sum())


def pack(
    samples: list[tuple[list[int], list[int]]], length: int, pad_id: int, seed: int, packed: bool
) -> ChatRows:
    """First-fit packing of samples (each at most `length` tokens) into rows of `length`, in a
    seeded order; one sample per row when not packed."""
    order = np.random.default_rng([seed, 11]).permutation(len(samples))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = len(samples[i][0])
        placed = False
        if packed:
            for b in range(max(0, len(bins) - PACK_LOOKBACK), len(bins)):
                if room[b] >= size:
                    bins[b].append(int(i))
                    room[b] -= size
                    placed = True
                    break
        if not placed:
            bins.append([int(i)])
            room.append(length - size)
    ids = np.full((len(bins), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(bins), length), dtype=np.uint8)
    seg = np.zeros((len(bins), length), dtype=np.int16)
    pos = np.zeros((len(bins), length), dtype=np.int32)
    for r, members in enumerate(bins):
        at = 0
        for s, i in enumerate(members, start=1):
            sample_ids, sample_mask = samples[i]
            n = len(sample_ids)
            ids[r, at : at + n] = sample_ids
            mask[r, at : at + n] = sample_mask
            seg[r, at : at + n] = s
            pos[r, at : at + n] = np.arange(n)
            at += n
    return ChatRows(ids, mask, seg, pos, seed, packed)


# ------------------------------------------------------------------------------------- the source


def tokenizer_dir(cfg: TrainConfig) -> str:
    if cfg.tokenizer:
        return cfg.tokenizer
    if (Path(cfg.model) / "tokenizer.json").is_file():
        return cfg.model
    raise ConfigError(
        'chat data needs a tokenizer: set tokenizer = "path/to/tokenizer" '
        "(or start from a model directory that holds tokenizer files)"
    )


def build(convs: list[Conversation], cfg: TrainConfig, renderer: ChatRenderer, seed: int, name: str):
    """Render, choose modes, drop what cannot be trained on, pack. Returns (rows, stats)."""
    length = cfg.seq_len + 1
    modes = choose_modes(convs, cfg.think_ratio, seed)
    samples, stats = (
        [],
        {
            "conversations": len(convs),
            "think": 0,
            "non_think": 0,
            "too_long": 0,
            "no_target": 0,
            "control_tokens": 0,
        },
    )
    for conv, think in zip(convs, modes, strict=True):
        msgs = conv.messages if think else without_reasoning(conv.messages)
        if renderer.forged(msgs):
            stats["control_tokens"] += 1
            continue
        ids, mask = renderer.render(msgs)
        if len(ids) > length:
            stats["too_long"] += 1
            continue
        if not any(mask[1:]):
            stats["no_target"] += 1
            continue
        samples.append((ids, mask))
        stats["think" if think else "non_think"] += 1
    if not samples:
        raise K1Error(
            f"{name}: no usable conversations ({stats['too_long']} longer than seq_len + 1 = {length} "
            f"tokens, {stats['no_target']} without an assistant turn, {stats['control_tokens']} with "
            "control-token text); raise seq_len or check the data"
        )
    pad = renderer.tok.pad_id if renderer.tok.pad_id is not None else 0
    rows = pack(samples, length, pad, seed, cfg.pack)
    stats.update(
        rows=rows.n,
        target_tokens=rows.target_tokens,
        fill=round(float(sum(len(s[0]) for s in samples)) / (rows.n * length), 4),
    )
    return rows, stats


def chat_sources(cfg: TrainConfig):
    """The "chat" data format: (train rows, validation rows, tokenizer vocabulary size)."""
    from k1 import tokenizer as tokenizer_mod

    tok = tokenizer_mod.load(tokenizer_dir(cfg))
    renderer = ChatRenderer(tok)
    convs = read_conversations(cfg.data, cfg)
    if cfg.val_data:
        val_convs = read_conversations(cfg.val_data, cfg)
    else:
        if len(convs) < 2:
            raise K1Error(
                f"{cfg.data}: one conversation cannot be split for validation; add data or set val_data"
            )
        n_val = max(1, int(len(convs) * cfg.val_fraction))
        order = np.random.default_rng([cfg.seed, 3]).permutation(len(convs))
        held = set(order[:n_val].tolist())
        val_convs = [c for i, c in enumerate(convs) if i in held]
        convs = [c for i, c in enumerate(convs) if i not in held]
    train, stats = build(convs, cfg, renderer, cfg.seed, cfg.data)
    val, val_stats = build(val_convs, cfg, renderer, cfg.seed + 1, cfg.val_data or cfg.data)
    if os.environ.get("RANK", "0") == "0":
        report = {"train": stats, "validation": val_stats, "think_ratio": cfg.think_ratio, "pack": cfg.pack}
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".sft_data.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out / "sft_data.json")
        skipped = stats["too_long"] + stats["no_target"] + stats["control_tokens"]
        print(
            f"k1 sft: {stats['think']} think + {stats['non_think']} non-think conversations in {stats['rows']} "
            f"sequences ({100 * stats['fill']:.0f}% full, {stats['target_tokens']:,} target tokens); "
            f"{skipped} skipped (see sft_data.json); {val_stats['rows']} validation sequences",
            file=sys.stderr,
        )
    return train, val, tok.vocab_size


DATA_FORMATS["chat"] = chat_sources


# ------------------------------------------------------------------------------------- config


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """A training config with SFT defaults (objective "sft", data_format "chat"); a model directory
    that holds tokenizer files is its own tokenizer."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise K1Error(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as err:
        raise K1Error(f"{path}: invalid TOML ({err})") from None
    raw.setdefault("objective", "sft")
    raw.setdefault("data_format", "chat")
    cfg = TrainConfig.from_dict(raw, source=str(path), overrides=overrides)
    if not cfg.tokenizer and (Path(cfg.model) / "tokenizer.json").is_file():
        cfg.tokenizer = cfg.model
    return cfg
