"""Model directories in the Hugging Face A.X K1 layout: read, validate, write.

A k1 model directory *is* a transformers A.X K1 directory: config.json (model_type "axk1"),
model.safetensors (or shards + model.safetensors.index.json), and tokenizer files when there is
a tokenizer. The tensors on disk follow the released checkpoint's naming, which transformers
converts on load; k1 keeps experts fused in memory (one 3-D tensor per projection), so the
name table below is the whole difference:

    on disk (release / transformers)                   in k1
    layers.N.mlp.experts.E.{gate,up}_proj.weight   ->  layers.N.mlp.experts.gate_up_proj[E]
    layers.N.mlp.experts.E.down_proj.weight        ->  layers.N.mlp.experts.down_proj[E]
    layers.N.post_mlp_layernorm.weight             ->  layers.N.mlp.post_mlp_layernorm.weight
    layers.(L+k).{enorm,hnorm,eh_proj}             ->  mtp.k.{enorm,hnorm,eh_proj}
    layers.(L+k).shared_head.norm                  ->  mtp.k.norm
    layers.(L+k).<block tensors>                   ->  mtp.k.block.<block tensors>
    layers.(L+k).{embed_tokens,shared_head.head}   ->  (shared with the main model; written as copies)

Fused expert tensors (what some converters write) are read as they are. Dense layers'
post_mlp_layernorm, which the release stores but never uses, is skipped.

    model = load("dir")            # k1.load
    save(model, "out", tokenizer="tok_dir")   # k1.save
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from k1.atomic import replace_dir
from k1.config import QUANTIZATION_MODES, ModelConfig
from k1.errors import CheckpointError, ConfigError, did_you_mean

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3  # transformers' default shard size
# Files that make a tokenizer; copied next to the weights when save() is given a tokenizer directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "k1_tokenizer.json")

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


# ------------------------------------------------------------------------------ name table


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """k1 tensors -> released-checkpoint names (per-expert matrices, layer-level post-MoE norm, MTP
    as layers L..L+k-1 with their own copies of the embedding and head)."""
    cfg: ModelConfig = model.config
    out: dict[str, torch.Tensor] = {}

    def put_block(prefix: str, name: str, t: torch.Tensor) -> None:
        if name == "mlp.experts.gate_up_proj":
            inner = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}mlp.experts.{e}.gate_proj.weight"] = t[e, :inner]
                out[f"{prefix}mlp.experts.{e}.up_proj.weight"] = t[e, inner:]
        elif name == "mlp.experts.down_proj":
            for e in range(t.shape[0]):
                out[f"{prefix}mlp.experts.{e}.down_proj.weight"] = t[e]
        elif name == "mlp.post_mlp_layernorm.weight":
            out[f"{prefix}post_mlp_layernorm.weight"] = t
        else:
            out[prefix + name] = t

    state = model.state_dict()
    for name, t in state.items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        m = _LAYER.match(name)
        if m:
            put_block(f"model.layers.{m.group(1)}.", m.group(2), t)
            continue
        m = re.match(r"^mtp\.(\d+)\.(.+)$", name)
        if m:
            layer = cfg.num_hidden_layers + int(m.group(1))
            prefix, rest = f"model.layers.{layer}.", m.group(2)
            if rest.startswith("block."):
                put_block(prefix, rest[len("block."):], t)
            elif rest == "norm.weight":
                out[prefix + "shared_head.norm.weight"] = t
            else:
                out[prefix + rest] = t
            continue
        out[name] = t
    for k in range(cfg.num_nextn_predict_layers):
        prefix = f"model.layers.{cfg.num_hidden_layers + k}."
        out[prefix + "embed_tokens.weight"] = state["model.embed_tokens.weight"]
        out[prefix + "shared_head.head.weight"] = state["lm_head.weight"]
    return out


def from_hf_state_dict(tensors: dict[str, torch.Tensor], cfg: ModelConfig,
                       where: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Released-checkpoint (or fused-expert) names -> k1 names. Unknown tensors are an error."""
    where = where or {}
    L = cfg.num_hidden_layers
    types = cfg.mlp_layer_types
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}

    def place(prefix: str, rest: str, layer_sparse: bool, name: str) -> None:
        m = _EXPERT.match(rest)
        if m:
            experts.setdefault((prefix, m.group(2)), {})[int(m.group(1))] = tensors[name]
        elif rest == "post_mlp_layernorm.weight" or rest == "mlp.post_mlp_layernorm.weight":
            if layer_sparse:
                out[prefix + "mlp.post_mlp_layernorm.weight"] = tensors[name]
            # dense layers: stored by the release, unused by the architecture
        else:
            out[prefix + rest] = tensors[name]

    for name in tensors:
        if name.endswith("weight_scale_inv"):
            raise CheckpointError(f"{where.get(name, 'checkpoint')}: tensor {name} is fp8-quantized; "
                                  "k1 reads bf16/fp32 checkpoints (dequantize it first)")
        if name.endswith("rotary_emb.inv_freq"):
            continue
        m = _LAYER.match(name)
        if not m:
            out[name] = tensors[name]
            continue
        layer, rest = int(m.group(1)), m.group(2)
        if layer < L:
            place(f"model.layers.{layer}.", rest, types[layer] == "sparse", name)
            continue
        k = layer - L
        if k >= cfg.num_nextn_predict_layers:
            raise CheckpointError(f"{where.get(name, 'checkpoint')}: tensor {name} belongs to layer {layer}, "
                                  f"but config.json has {L} layers and {cfg.num_nextn_predict_layers} MTP layers")
        if rest in ("embed_tokens.weight", "shared_head.head.weight"):
            continue  # the main model's embedding and head are shared
        prefix = f"mtp.{k}."
        if rest.split(".")[0] in ("enorm", "hnorm", "eh_proj"):
            out[prefix + rest] = tensors[name]
        elif rest == "shared_head.norm.weight":
            out[prefix + "norm.weight"] = tensors[name]
        else:
            place(prefix + "block.", rest, cfg.has_moe, name)

    for (prefix, proj), by_expert in experts.items():
        missing = sorted(set(range(cfg.n_routed_experts)) - set(by_expert))
        if missing or len(by_expert) != cfg.n_routed_experts:
            raise CheckpointError(f"checkpoint: {prefix}mlp.experts has {len(by_expert)} experts for {proj}, "
                                  f"config.json says {cfg.n_routed_experts} (missing e.g. expert {missing[:1]})")
        stacked = torch.stack([by_expert[e] for e in range(cfg.n_routed_experts)])
        if proj == "down_proj":
            out[prefix + "mlp.experts.down_proj"] = stacked
        else:
            out.setdefault(prefix + "mlp.experts._gate_up", {})[proj] = stacked  # type: ignore[index]
    for name in [n for n in out if n.endswith("mlp.experts._gate_up")]:
        parts = out.pop(name)
        if set(parts) != {"gate_proj", "up_proj"}:
            raise CheckpointError(f"checkpoint: {name[:-len('_gate_up')]} has {sorted(parts)} but needs gate_proj and up_proj")
        out[name.replace("_gate_up", "gate_up_proj")] = torch.cat((parts["gate_proj"], parts["up_proj"]), dim=1)
    return out


# ------------------------------------------------------------------------------ reading


def _read_config(path: Path) -> tuple[dict, ModelConfig]:
    cfg_path = path / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (a model is a directory with config.json and weights)")
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: not a model directory (no {CONFIG_NAME})")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    try:
        return raw, ModelConfig.from_hf_dict(raw, source=str(cfg_path))
    except ConfigError as err:
        msg = str(err)
        raise CheckpointError(msg if msg.startswith(str(cfg_path)) else f"{cfg_path}: {msg}") from None


def _weight_files(path: Path) -> dict[str, list[str]]:
    """File -> tensor names, from the index when the checkpoint is sharded."""
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{index}: not a valid safetensors index ({err})") from None
        files: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            files.setdefault(fname, []).append(name)
        for fname in files:
            if not (path / fname).is_file():
                raise CheckpointError(f"{path / fname}: listed in {INDEX_NAME} but missing")
        return files
    single = path / WEIGHTS_NAME
    if single.is_file():
        return {WEIGHTS_NAME: []}
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME} (weights are missing)")


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a directory (memory-mapped), and the file each came from."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}
    for fname, expected in _weight_files(path).items():
        fpath = path / fname
        try:
            with safe_open(str(fpath), framework="pt") as f:
                names = list(f.keys())
                for name in names:
                    tensors[name] = f.get_tensor(name)
                    where[name] = str(fpath)
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{fpath}: unreadable or truncated safetensors file ({err})") from None
        missing = sorted(set(expected) - set(names))
        if missing:
            raise CheckpointError(f"{fpath}: {INDEX_NAME} lists {missing[0]} but the file does not hold it")
    return tensors, where


def load(path: str | os.PathLike, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu",
         quantize: str | None = None):
    """Load a k1 or transformers A.X K1 directory as a `k1.model.Transformer` in eval mode.
    quantize="int8": weight-only int8 for inference (`Transformer.quantize`)."""
    from k1.model import Rotary, Transformer

    if quantize and quantize not in QUANTIZATION_MODES:
        raise ConfigError(f"unknown quantization {quantize!r}{did_you_mean(quantize, list(QUANTIZATION_MODES))}")
    path = Path(path)
    _, cfg = _read_config(path)
    tensors, where = read_tensors(path)
    has_mtp = any(_is_mtp(n, cfg) for n in tensors)
    if cfg.num_nextn_predict_layers and not has_mtp:
        cfg = cfg.replace(num_nextn_predict_layers=0)  # e.g. saved by transformers, which drops MTP
    state = from_hf_state_dict(tensors, cfg, where)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        expected.pop("lm_head.weight", None)
    for name, ref in expected.items():
        if name.endswith("e_score_correction_bias") and name not in state:
            state[name] = torch.zeros(ref.shape, dtype=torch.float32)  # releases may route without one
    missing = [n for n in expected if n not in state]
    extra = [n for n in state if n not in expected]
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if extra:
        raise CheckpointError(f"{where.get(extra[0], path)}: unexpected tensor {extra[0]} for this config.json"
                              + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name, ref in expected.items():
        if tuple(state[name].shape) != tuple(ref.shape):
            raise CheckpointError(f"{where.get(name, path)}: tensor {name} has shape {tuple(state[name].shape)}, "
                                  f"config.json implies {tuple(ref.shape)}")
    target = _dtype(dtype) if dtype is not None else None
    for name in state:
        t = state[name]
        if name.endswith("e_score_correction_bias"):
            t = t.float()  # routing bias stays fp32 (selection is sensitive to its small steps)
        elif target is not None:
            t = t.to(target)
        state[name] = t.to(device)
    model.load_state_dict(state, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rotary = Rotary(cfg).to(device)  # non-persistent buffers were left on the meta device
    if quantize:
        model.quantize(quantize)
    return model.eval()


def _is_mtp(name: str, cfg: ModelConfig) -> bool:
    m = _LAYER.match(name)
    return bool(m) and int(m.group(1)) >= cfg.num_hidden_layers


def _dtype(d: torch.dtype | str) -> torch.dtype:
    if isinstance(d, torch.dtype):
        return d
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if d not in table:
        raise ConfigError(f"unknown dtype {d!r}; valid: {', '.join(table)}")
    return table[d]


# ------------------------------------------------------------------------------ writing


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def save(model, path: str | os.PathLike, tokenizer=None, dtype: torch.dtype | str | None = None,
         max_shard_bytes: int = DEFAULT_SHARD_BYTES, extra_files: dict[str, str] | None = None,
         write_extra=None) -> Path:
    """Write `model` as a Hugging Face A.X K1 directory, atomically.

    Everything is written into a temporary sibling directory, which is renamed into place only
    when complete: a crash leaves either the old directory or the new one, never a half-written one.
    `tokenizer` may be a tokenizer directory or an object with `save(dir)`; `write_extra(dir)` may
    add files (a trainer's optimizer state) before the directory becomes visible.
    """
    from safetensors.torch import save_file

    if getattr(model, "quantized", None):
        raise CheckpointError(f"{path}: the model is quantized ({model.quantized}) for inference; "
                              "save it before quantizing (quantized weights are not an A.X K1 checkpoint)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = _dtype(dtype) if dtype is not None else None
    hf = to_hf_state_dict(model)
    tensors = {}
    for name, t in hf.items():
        t = t.detach()
        if target is not None and t.is_floating_point() and not name.endswith("e_score_correction_bias"):
            t = t.to(target)
        tensors[name] = t.to("cpu").contiguous().clone()  # own storage: safetensors refuses shared views
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        cfg = model.config.to_hf_dict()
        first = next(iter(tensors.values()))
        cfg["dtype"] = str(first.dtype).removeprefix("torch.")
        cfg["k1_version"] = _version()
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        shards = _shards(tensors, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards, start=1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                for name, t in shard.items():
                    weight_map[name] = fname
                    total += t.numel() * t.element_size()
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            _write_tokenizer(tokenizer, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        if write_extra is not None:
            write_extra(tmp)
        _fsync_dir(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_tokenizer(tokenizer, out: Path) -> None:
    if isinstance(tokenizer, (str, os.PathLike)):
        src = Path(tokenizer)
        files = [src / f for f in TOKENIZER_FILES if (src / f).is_file()]
        if not (src / "tokenizer.json").is_file():
            raise CheckpointError(f"{src}: not a tokenizer directory (no tokenizer.json)")
        for f in files:
            shutil.copy2(f, out / f.name)
    elif hasattr(tokenizer, "save"):
        tokenizer.save(out)
    else:
        raise TypeError("tokenizer must be a directory or an object with save(dir)")


def _fsync_dir(path: Path) -> None:
    """Flush the files in `path` and the directory entry itself to disk."""
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version() -> str:
    from k1 import __version__

    return __version__


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and ((p / WEIGHTS_NAME).is_file() or (p / INDEX_NAME).is_file())



class StateDictModel:
    """A config plus a state dict, standing in for a model when saving (e.g. one gathered from
    FSDP shards, where the live model holds only this rank's slice)."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor]):
        self.config, self._state = config, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state
