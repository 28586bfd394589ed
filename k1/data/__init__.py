"""k1.data: corpus curation, from raw files to clean, deduplicated, PII-free token shards.

    import k1.data
    text, counts = k1.data.scrub("주민번호 900101-1234567")     # PII scrubber on its own
    result = k1.data.prepare("recipes/data_demo.toml")           # the whole pipeline (see pipeline.py)
    ds = k1.data.ShardDataset("runs/data_demo/manifest.json", "train")

Modules, in pipeline order: read, normalize, language, quality, dedup, pii, shard, report; steps wraps
them as datatrove pipeline steps and pipeline runs the stages. Heavy imports (datatrove, numpy) wait
until first use, so `k1.data.scrub` stays quick to import.
"""

from __future__ import annotations

from k1.data.pii import PII_TYPES, find_pii, scrub

__all__ = ["scrub", "find_pii", "PII_TYPES", "prepare", "DataConfig", "ShardDataset", "read_manifest"]


def __getattr__(name):
    if name in ("prepare", "DataConfig"):
        from k1.data import pipeline

        return getattr(pipeline, name)
    if name in ("ShardDataset", "read_manifest"):
        from k1.data import shard

        return getattr(shard, name)
    raise AttributeError(f"module 'k1.data' has no attribute {name!r}")
