"""Knowledge distillation: a large teacher teaches a small student.

    k1 distill recipes/distill_demo.toml                  # capture the teacher's top-k, train the student
    k1 distill capture recipes/distill_demo.toml          # one step (resumable)
    k1 distill generate recipes/distill_seq_demo.toml     # sequence-level: verified shortest answers
    k1 distill train recipes/distill_demo.toml --resume

Teachers (a registry): a k1 model directory of any size, a transformers causal-LM directory, or an
OpenAI-compatible endpoint on an allow-listed host. Two methods:

* logit: the teacher's top-k log-probs and leftover mass per token (captured to shards, or computed
  online), and a KD loss (forward KL, reverse KL, generalized JSD; k1.objectives) mixed with
  cross-entropy; needs the teacher's tokenizer;
* sequence: the teacher's think / non-think answers, verified, shortest correct kept, trained with
  SFT; works across tokenizers.

    from k1 import distill
    cfg = distill.DistillConfig.from_toml("recipes/distill_demo.toml")
    distill.capture(cfg); result = distill.train(cfg)

See docs/distill.md.
"""

from __future__ import annotations

from k1.distill.client import EndpointClient, check_host
from k1.distill.config import CaptureConfig, DistillConfig, GenerateConfig, KDConfig, TeacherConfig
from k1.distill.logits import CapturedWindows, capture, kd_sources, read_manifest
from k1.distill.pipeline import run, train, train_config
from k1.distill.sequence import VERIFIERS, generate, select
from k1.distill.teachers import TEACHERS, GenRequest, GenResult, TopK, load_teacher, tokenizer_fingerprint

__all__ = [
    "TEACHERS",
    "VERIFIERS",
    "CaptureConfig",
    "CapturedWindows",
    "DistillConfig",
    "EndpointClient",
    "GenRequest",
    "GenResult",
    "GenerateConfig",
    "KDConfig",
    "TeacherConfig",
    "TopK",
    "capture",
    "check_host",
    "generate",
    "kd_sources",
    "load_teacher",
    "read_manifest",
    "run",
    "select",
    "tokenizer_fingerprint",
    "train",
    "train_config",
]
