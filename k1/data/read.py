"""Reading raw corpora: text, jsonl, csv, parquet and Hugging Face `datasets` directories saved to disk.

    from k1.data.read import InputSpec, plan_units, read_unit
    specs = [InputSpec(path="raw/", text_field="text")]
    units = plan_units(specs)                    # files split into independent work units
    for record in read_unit(units[0], specs[0], errors=[]):
        print(record.id, record.text[:40])

Work is cut into *units* (a byte range of a line-based file, a parquet row group, one arrow file of a
saved dataset) so that one large file still spreads over every task. Units are assigned to tasks round
robin in a fixed order, so the same inputs and task count always give the same documents in the same
order. Reading streams: nothing holds more than one record at a time.

Malformed input never stops a run: a bad line, a record without the text field, a file that cannot
be opened or decoded becomes an entry in `errors` (file, position, reason) and reading goes on; after
MAX_ERRORS_PER_FILE problems a file is abandoned with one more entry saying so.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from k1.errors import ConfigError, K1Error, did_you_mean

FORMATS = ("auto", "text", "jsonl", "csv", "parquet", "hf")
TEXT_UNITS = ("line", "paragraph", "file")
_SUFFIX_FORMAT = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
# Limits on untrusted input: one record larger than this is reported and skipped, not loaded.
MAX_RECORD_BYTES = 16 << 20
MAX_ERRORS_PER_FILE = 100
SPLIT_BYTES = 32 << 20
"""Line-based files are cut into units of this many bytes."""


@dataclass
class InputSpec:
    """One entry of `[[inputs]]` in the config."""

    path: str
    """A file, a directory (read recursively) or a glob pattern."""
    format: str = "auto"
    """auto (by file suffix; a directory with state.json is a saved `datasets` dataset), text, jsonl, csv, parquet or hf."""
    text_field: str = "text"
    """Field holding the document text (jsonl, csv, parquet, hf)."""
    id_field: str = ""
    """Field holding a document id; empty = derived from file and position."""
    source: str = ""
    """Name recorded with every document; default: the path's last component."""
    text_unit: str = "line"
    """Plain text only: one document per line, per blank-line-separated paragraph, or per file."""
    split: str = "train"
    """hf only: which split of a saved DatasetDict."""

    def validate(self, where: str) -> None:
        if self.format not in FORMATS:
            raise ConfigError(
                f"{where}.format: unknown format {self.format!r}{did_you_mean(self.format, FORMATS)}"
            )
        if self.text_unit not in TEXT_UNITS:
            raise ConfigError(
                f"{where}.text_unit: unknown {self.text_unit!r}{did_you_mean(self.text_unit, TEXT_UNITS)}"
            )

    @property
    def name(self) -> str:
        return self.source or Path(self.path.rstrip("/")).name or "input"


@dataclass(frozen=True)
class Unit:
    spec_index: int
    path: str
    format: str
    start: int = 0
    """Byte offset (line formats), row group (parquet), 0 otherwise."""
    end: int = -1
    """Byte offset where the next unit starts; -1 = to the end."""
    rel: str = ""
    """Path relative to the input, used in document ids."""


@dataclass
class Record:
    id: str
    text: str
    source: str
    file: str


def _is_hf_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _detect(path: Path, declared: str) -> str | None:
    if declared != "auto":
        return declared
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return _SUFFIX_FORMAT.get(Path(name).suffix)


def _expand(spec: InputSpec) -> list[tuple[Path, Path]]:
    """(file or hf dir, base for relative names), sorted for a stable order."""
    p = Path(spec.path).expanduser()
    if any(ch in spec.path for ch in "*?["):
        hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True))
        return [(h, h.parent) for h in hits if h.is_file() or _is_hf_dir(h)]
    if not p.exists():
        raise K1Error(f"input {spec.path!r} does not exist: fix [[inputs]] path in the config")
    if p.is_file() or _is_hf_dir(p) or spec.format == "hf":
        return [(p, p.parent)]
    out = []
    for root, dirs, files in os.walk(p):
        dirs.sort()
        rootp = Path(root)
        if _is_hf_dir(rootp) and rootp != p:
            out.append((rootp, p))
            dirs.clear()
            continue
        for f in sorted(files):
            if not f.startswith("."):
                out.append((rootp / f, p))
    return out


def plan_units(specs: list[InputSpec], split_bytes: int = SPLIT_BYTES) -> tuple[list[Unit], list[dict]]:
    """Cut every input into work units; also return the files skipped (unknown format) as errors."""
    units: list[Unit] = []
    skipped: list[dict] = []
    for i, spec in enumerate(specs):
        for path, base in _expand(spec):
            rel = str(path.relative_to(base)) if path != base else path.name
            if _is_hf_dir(path) or spec.format == "hf":
                units.extend(
                    Unit(i, str(f), "hf", rel=f"{rel}/{Path(f).name}") for f in _hf_arrow_files(path, spec)
                )
                continue
            fmt = _detect(path, spec.format)
            if fmt is None:
                skipped.append(
                    {
                        "file": str(path),
                        "pos": None,
                        "reason": "unknown file type (set format= in [[inputs]])",
                    }
                )
                continue
            if fmt == "parquet":
                units.extend(
                    Unit(i, str(path), "parquet", start=g, rel=rel)
                    for g in range(_parquet_groups(path, skipped))
                )
                continue
            line_based = fmt == "jsonl" or (fmt == "text" and spec.text_unit == "line")
            size = path.stat().st_size
            if line_based and not path.name.endswith(".gz") and size > split_bytes:
                for start in range(0, size, split_bytes):
                    units.append(Unit(i, str(path), fmt, start, min(size, start + split_bytes), rel))
            else:
                units.append(Unit(i, str(path), fmt, rel=rel))
    return units, skipped


def _parquet_groups(path: Path, errors: list[dict]) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).num_row_groups
    except Exception as err:  # a corrupt file is reported, not fatal
        errors.append({"file": str(path), "pos": None, "reason": f"cannot open parquet: {err}"})
        return 0


def _hf_arrow_files(path: Path, spec: InputSpec) -> list[str]:
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if spec.split not in splits:
            raise K1Error(
                f"{path}: no split {spec.split!r} in this saved DatasetDict{did_you_mean(spec.split, splits)}"
            )
        path = path / spec.split
    state = json.loads((path / "state.json").read_text())
    return [str(path / f["filename"]) for f in state.get("_data_files", [])]


class _FileErrors:
    def __init__(self, errors: list[dict], path: str):
        self.errors, self.path, self.count = errors, path, 0

    def add(self, pos, reason: str) -> bool:
        """Record one problem; False once the file has had too many and should be abandoned."""
        self.count += 1
        if self.count <= MAX_ERRORS_PER_FILE:
            self.errors.append({"file": self.path, "pos": pos, "reason": reason})
            return True
        self.errors.append(
            {
                "file": self.path,
                "pos": pos,
                "reason": f"more than {MAX_ERRORS_PER_FILE} problems: skipped the rest of the file",
            }
        )
        return False


def _lines(f, start: int, end: int) -> Iterator[tuple[int, bytes | None]]:
    """(offset, line) for lines *starting* in [start, end); None for a line over MAX_RECORD_BYTES."""
    if start > 0:
        f.seek(start - 1)
        pos = start - 1
        while True:  # skip the rest of the line that begins before `start`
            chunk = f.readline(1 << 20)
            pos += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
    else:
        pos = 0
    while end < 0 or pos < end:
        line = f.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        offset = pos
        pos += len(line)
        if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while True:
                rest = f.readline(1 << 20)
                pos += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield offset, None
            continue
        yield offset, line


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_unit(unit: Unit, spec: InputSpec, errors: list[dict]) -> Iterator[Record]:
    """Records of one unit. Problems go to `errors`; nothing here raises for bad data."""
    ferr = _FileErrors(errors, unit.path)
    source = spec.name
    try:
        if unit.format in ("jsonl", "text") and (unit.format == "jsonl" or spec.text_unit == "line"):
            yield from _read_lines(unit, spec, ferr, source)
        elif unit.format == "text":
            yield from _read_text_blocks(unit, spec, ferr, source)
        elif unit.format == "csv":
            yield from _read_csv(unit, spec, ferr, source)
        elif unit.format == "parquet":
            yield from _read_table_batches(unit, spec, ferr, source, _parquet_batches(unit, spec))
        elif unit.format == "hf":
            yield from _read_table_batches(unit, spec, ferr, source, _arrow_batches(unit))
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        ferr.add(None, f"unreadable: {err.__class__.__name__}: {err}")
    except Exception as err:  # pyarrow raises its own types for corrupt files
        if err.__class__.__module__.startswith("pyarrow"):
            ferr.add(None, f"unreadable: {err}")
        else:
            raise


def _doc_text(value, ferr: _FileErrors, pos, spec: InputSpec, keys) -> str | None:
    if value is None:
        ferr.add(
            pos,
            f"no field {spec.text_field!r} (fields: {', '.join(map(str, keys))}): set text_field in [[inputs]]",
        )
        return None
    if not isinstance(value, str):
        ferr.add(pos, f"field {spec.text_field!r} is {type(value).__name__}, not text")
        return None
    return value


def _read_lines(unit: Unit, spec: InputSpec, ferr: _FileErrors, source: str) -> Iterator[Record]:
    with _open_binary(unit.path) as f:
        for offset, raw in _lines(f, unit.start, unit.end):
            if raw is None:
                if not ferr.add(offset, f"record over {MAX_RECORD_BYTES} bytes"):
                    return
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if not ferr.add(offset, "not valid UTF-8"):
                    return
                continue
            if unit.format == "text":
                if line.strip():
                    yield Record(f"{source}/{unit.rel}@{offset}", line.rstrip("\n"), source, unit.rel)
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                if not ferr.add(offset, f"malformed JSON: {err.msg}"):
                    return
                continue
            if not isinstance(obj, dict):
                if not ferr.add(offset, "JSON line is not an object"):
                    return
                continue
            text = _doc_text(obj.get(spec.text_field), ferr, offset, spec, obj.keys())
            if text is None:
                if ferr.count > MAX_ERRORS_PER_FILE:
                    return
                continue
            doc_id = (
                str(obj.get(spec.id_field))
                if spec.id_field and obj.get(spec.id_field) is not None
                else f"{source}/{unit.rel}@{offset}"
            )
            yield Record(doc_id, text, source, unit.rel)


def _read_text_blocks(unit: Unit, spec: InputSpec, ferr: _FileErrors, source: str) -> Iterator[Record]:
    with _open_binary(unit.path) as fb:
        if spec.text_unit == "file":
            data = fb.read(MAX_RECORD_BYTES + 1)
            if len(data) > MAX_RECORD_BYTES:
                ferr.add(0, f"file over {MAX_RECORD_BYTES} bytes (use text_unit = 'line' or 'paragraph')")
                return
            try:
                yield Record(f"{source}/{unit.rel}", data.decode("utf-8"), source, unit.rel)
            except UnicodeDecodeError:
                ferr.add(0, "not valid UTF-8")
            return
        block: list[str] = []
        block_start, size, n = 0, 0, 0
        for offset, raw in _lines(fb, 0, -1):
            try:
                line = raw.decode("utf-8") if raw is not None else None
            except UnicodeDecodeError:
                line = None
            if line is None:
                if not ferr.add(offset, "line too long or not valid UTF-8"):
                    return
                continue
            if line.strip():
                if not block:
                    block_start = offset
                block.append(line)
                size += len(raw)
                if size <= MAX_RECORD_BYTES:
                    continue
                ferr.add(block_start, f"paragraph over {MAX_RECORD_BYTES} bytes: split it")
                block, size = [], 0
                continue
            if block:
                n += 1
                yield Record(f"{source}/{unit.rel}@{block_start}", "".join(block), source, unit.rel)
                block, size = [], 0
        if block:
            yield Record(f"{source}/{unit.rel}@{block_start}", "".join(block), source, unit.rel)


def _read_csv(unit: Unit, spec: InputSpec, ferr: _FileErrors, source: str) -> Iterator[Record]:
    csv.field_size_limit(MAX_RECORD_BYTES)
    with _open_binary(unit.path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        reader = csv.DictReader(f)
        row = 0
        try:
            for row, rec in enumerate(reader, start=1):
                text = _doc_text(rec.get(spec.text_field), ferr, row, spec, reader.fieldnames or [])
                if text is None:
                    if ferr.count > MAX_ERRORS_PER_FILE:
                        return
                    continue
                doc_id = (
                    rec.get(spec.id_field)
                    if spec.id_field and rec.get(spec.id_field)
                    else f"{source}/{unit.rel}#{row}"
                )
                yield Record(doc_id, text, source, unit.rel)
        except csv.Error as err:  # the csv module cannot resynchronise after a broken quote
            ferr.add(row + 1, f"malformed CSV ({err}): skipped the rest of the file")
        except UnicodeDecodeError:
            ferr.add(row + 1, "not valid UTF-8: skipped the rest of the file")


def _parquet_batches(unit: Unit, spec: InputSpec):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(unit.path)
    names = pf.schema_arrow.names
    cols = [c for c in (spec.text_field, spec.id_field) if c and c in names]
    if spec.text_field not in names:
        raise K1Error(
            f"{unit.path}: no column {spec.text_field!r}{did_you_mean(spec.text_field, names)}: set text_field in [[inputs]]"
        )
    yield from pf.iter_batches(batch_size=1024, row_groups=[unit.start], columns=cols)


def _arrow_batches(unit: Unit):
    import pyarrow as pa

    with pa.memory_map(unit.path, "r") as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def _read_table_batches(
    unit: Unit, spec: InputSpec, ferr: _FileErrors, source: str, batches
) -> Iterator[Record]:
    row = 0
    for batch in batches:
        names = batch.schema.names
        if spec.text_field not in names:
            raise K1Error(
                f"{unit.path}: no column {spec.text_field!r}{did_you_mean(spec.text_field, names)}: set text_field in [[inputs]]"
            )
        texts = batch.column(spec.text_field).to_pylist()
        ids = batch.column(spec.id_field).to_pylist() if spec.id_field and spec.id_field in names else None
        for j, value in enumerate(texts):
            pos = f"group {unit.start} row {row}" if unit.format == "parquet" else f"row {row}"
            text = _doc_text(value, ferr, pos, spec, names) if value is not None else None
            if value is None:
                ferr.add(pos, f"empty {spec.text_field!r}")
            if text is not None and len(text) <= MAX_RECORD_BYTES:
                doc_id = (
                    str(ids[j])
                    if ids is not None and ids[j] is not None
                    else f"{source}/{unit.rel}#{unit.start}.{row}"
                )
                yield Record(doc_id, text, source, unit.rel)
            if ferr.count > MAX_ERRORS_PER_FILE:
                return
            row += 1
