"""k1's stages as datatrove pipeline steps: reader, normalizer, language tagger, quality filter, PII
scrubber, tokenizer + shard writer, and the finalizer that writes the manifest and report.

Every step counts what it sees with datatrove's `stat_update` (docs_in / docs_out / bytes_in /
bytes_out and one `dropped/<reason>` per drop), which datatrove saves per task under
`work/logs/<stage>/stats/`; the report is built from those files, so it is the same whichever
executor (local, Slurm, Ray) ran the tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class K1Step(PipelineStep):
    type = "k1"

    def count_in(self, doc: Document) -> None:
        self.stat_update("docs_in")
        self.stat_update("bytes_in", value=_nbytes(doc.text))

    def count_out(self, doc: Document) -> None:
        self.stat_update("docs_out")
        self.stat_update("bytes_out", value=_nbytes(doc.text))

    def drop(self, reason: str) -> None:
        self.stat_update(f"dropped/{reason}")


class CorpusReader(K1Step):
    """Reads this task's units (see k1.data.read) and yields Documents with id, source and file."""

    name = "read"

    def __init__(self, specs: list, units: list, errors_dir: str):
        super().__init__()
        self.specs, self.units, self.errors_dir = specs, units, errors_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.read import read_unit

        errors: list[dict] = []
        try:
            for unit in self.units[rank::world_size]:
                self.stat_update("units")
                for rec in read_unit(unit, self.specs[unit.spec_index], errors):
                    with self.track_time():
                        doc = Document(
                            text=rec.text, id=rec.id, metadata={"source": rec.source, "file": rec.file}
                        )
                        self.count_out(doc)
                    yield doc
        finally:
            self.stat_update("read_errors", value=len(errors))
            out = Path(self.errors_dir)
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".tmp-{rank:05d}.jsonl"
            with open(tmp, "w", encoding="utf-8") as f:
                for e in errors:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
            os.replace(tmp, out / f"{rank:05d}.jsonl")


class Normalize(K1Step):
    name = "normalize"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.normalize import normalize

        for doc in data:
            self.count_in(doc)
            with self.track_time():
                doc.text = normalize(doc.text)
            if not doc.text:
                self.drop("empty")
                continue
            self.count_out(doc)
            yield doc


class LanguageTag(K1Step):
    """Sets metadata["lang"] (ko / en / code / other) and drops languages the config does not keep."""

    name = "language"

    def __init__(self, keep: tuple[str, ...], config):
        super().__init__()
        self.keep, self.config = tuple(keep), config

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.language import identify

        for doc in data:
            self.count_in(doc)
            with self.track_time():
                lang = identify(doc.text, self.config)
            doc.metadata["lang"] = lang
            self.stat_update(f"lang/{lang}")
            if lang not in self.keep:
                self.drop(f"language_{lang}")
                continue
            self.count_out(doc)
            yield doc


class QualityFilter(K1Step):
    name = "quality"

    def __init__(self, rules: dict):
        super().__init__()
        self.rules = rules

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.quality import check

        for doc in data:
            self.count_in(doc)
            lang = doc.metadata.get("lang", "other")
            with self.track_time():
                reason = check(doc.text, lang, self.rules[lang])
            if reason:
                self.drop(reason)
                self.stat_update(f"dropped_{lang}/{reason}")
                continue
            self.count_out(doc)
            yield doc


class ScrubPII(K1Step):
    name = "pii"

    def __init__(self, types: tuple[str, ...]):
        super().__init__()
        self.types = tuple(types)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.pii import scrub

        for doc in data:
            self.count_in(doc)
            with self.track_time():
                doc.text, counts = scrub(doc.text, self.types)
            if counts:
                self.stat_update("docs_with_pii")
                for kind, n in counts.items():
                    self.stat_update(f"pii/{kind}", value=n)
            self.count_out(doc)
            yield doc


class RankJsonlWriter(K1Step):
    """Writes this task's documents to `<folder>/<rank>.jsonl` (temp name, renamed when the task's
    stream ends) and passes them on. A later stage reads exactly the file of its own rank, so the
    document order that datatrove's dedup signatures index is never shifted by a missing file."""

    name = "write"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = Path(self.folder)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".tmp-{rank:05d}.jsonl"
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in data:
                with self.track_time():
                    f.write(
                        json.dumps(
                            {"id": doc.id, "text": doc.text, "metadata": doc.metadata}, ensure_ascii=False
                        )
                        + "\n"
                    )
                yield doc
        os.replace(tmp, out / f"{rank:05d}.jsonl")


class RankJsonlReader(K1Step):
    name = "read_work"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl"
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                yield Document(text=rec["text"], id=rec["id"], metadata=rec["metadata"])


def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Deterministic split by a hash of the document id."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


_NON_DIGIT = re.compile(r"\D")


class TokenizeShards(K1Step):
    """Tokenizes documents (encode_batch) and writes train/validation shards; checks canaries."""

    name = "shards"

    def __init__(
        self,
        tokenizer: str,
        separator: str,
        out_dir: str,
        shard_tokens: int,
        validation: float,
        seed: int,
        canaries: list[str],
        batch_docs: int = 64,
    ):
        super().__init__()
        self.tokenizer_path, self.separator, self.out_dir = tokenizer, separator, out_dir
        self.shard_tokens, self.validation, self.seed = shard_tokens, validation, seed
        self.canaries, self.batch_docs = list(canaries), batch_docs

    def _canary_hits(self, text: str, digits: str | None) -> list[int]:
        hits = []
        for i, c in enumerate(self.canaries):
            if c in text:
                hits.append(i)
                continue
            cd = _NON_DIGIT.sub("", c)
            if digits is not None and len(cd) >= 8 and cd in digits:
                hits.append(i)  # the same number written with other separators
        return hits

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.shard import ShardWriter, dtype_for, load_tokenizer

        info = load_tokenizer(self.tokenizer_path, self.separator)
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        dtype = dtype_for(info.vocab_size)
        writers = {s: ShardWriter(out, s, rank, dtype, self.shard_tokens) for s in ("train", "validation")}
        sep = np.array([info.separator_id], dtype=np.int64)
        numeric = any(len(_NON_DIGIT.sub("", c)) >= 8 for c in self.canaries)
        pending: list[tuple[str, Document]] = []

        def flush():
            if not pending:
                return
            with self.track_time():
                encs = info.tokenizer.encode_batch([d.text for _, d in pending], add_special_tokens=False)
                for (split, _doc), enc in zip(pending, encs, strict=True):
                    ids = np.concatenate([np.asarray(enc.ids, dtype=np.int64), sep])
                    writers[split].add(ids)
                    self.stat_update(f"tokens/{split}", value=len(ids))
                    self.stat_update(f"docs/{split}")
            pending.clear()

        for doc in data:
            self.count_in(doc)
            if self.canaries:
                for i in self._canary_hits(doc.text, _NON_DIGIT.sub("", doc.text) if numeric else None):
                    self.stat_update(f"canary/{i}")
            split = "validation" if is_validation(doc.id, self.validation, self.seed) else "train"
            if writers[split].wants():
                pending.append((split, doc))
                if len(pending) >= self.batch_docs:
                    flush()
            else:
                self.stat_update("resumed_docs")
            self.count_out(doc)
            yield doc
        flush()
        for w in writers.values():
            w.flush()


class Finalize(PipelineStep):
    """One task after everything else: gathers the shards into manifest.json and writes the report."""

    type = "k1"
    name = "finalize"

    def __init__(self, config_dict: dict):
        super().__init__()
        self.config_dict = config_dict

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from k1.data.pipeline import DataConfig, finalize

        finalize(DataConfig.from_dict(self.config_dict))
        return
        yield
