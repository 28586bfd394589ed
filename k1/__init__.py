"""k1: a Korean-first LLM stack after SK Telecom's A.X K1.

import k1
model = k1.load("path/to/model_dir")     # a Hugging Face A.X K1 directory
logits = model(input_ids)                 # (batch, seq, vocab)
k1.save(model, "path/to/out_dir")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "save", "ModelConfig", "__version__"]


def __getattr__(name):
    # Keep `import k1` light (the CLI's --help should not wait for torch); load on first use.
    if name == "ModelConfig":
        from k1.config import ModelConfig

        return ModelConfig
    if name in ("load", "save"):
        from k1 import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'k1' has no attribute {name!r}")
