"""`k1 plan`: FLOPs, memory and time to train and serve a config on a cluster."""

from __future__ import annotations

import json

import typer


def command(
    model: str = typer.Argument(..., help="A preset name or a model directory."),
    tokens: float = typer.Option(..., "--tokens", help="Training tokens, e.g. 10e12."),
    gpus: str = typer.Option("1024xH200", "--gpus", help="COUNTxTYPE, e.g. 1024xH200, 64xH100."),
    mfu: float = typer.Option(0.35, help="Model FLOPs utilization to assume for the time estimate."),
    seq_len: int = typer.Option(8192, help="Training sequence length (attention FLOPs grow with it)."),
    serve_context: int = typer.Option(32768, help="Context per sequence when serving."),
    serve_batch: int = typer.Option(16, help="Concurrent sequences when serving."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """Estimate training FLOPs, time, memory per GPU (FSDP + expert parallelism) and serving memory."""
    from k1.cli.model import _config
    from k1.plan import plan

    cfg, name = _config(model)
    p = plan(cfg, tokens, gpus, mfu=mfu, seq_len=seq_len, serve_context=serve_context, serve_batch=serve_batch)
    if as_json:
        print(json.dumps(p, indent=2))
        return
    print(f"plan for {name}: {p['params_total'] / 1e9:.1f}B parameters with MTP ({p['params_active'] / 1e9:.1f}B active), "
          f"{tokens:.3g} tokens on {p['gpus']} x {p['gpu']} ({p['nodes']} nodes)")
    print(f"  training FLOPs: {p['train_flops']:.3g} ({p['flops_per_token']:.3g} per token at seq {seq_len})")
    print(f"  time at {100 * mfu:.0f}% MFU: {p['train_days']:.1f} days")
    print(f"  expert parallelism: EP={p['expert_parallel']} ({p['experts_per_gpu']:g} experts per GPU), "
          f"{p['data_parallel_replicas_of_experts']} data-parallel replicas of each expert shard; "
          "non-expert weights FSDP-sharded over all GPUs")
    print("  memory per GPU while training:")
    for k, v in p["train_gib_per_gpu"].items():
        print(f"    {k:36s} {v:8.1f} GiB")
    print(f"    fits in {p['gpu']}: {'yes' if p['fits'] else 'NO'}")
    s = p["serve"]
    print(f"  serving ({s['batch']} sequences x {s['context']} tokens): weights {s['weights_gib_bf16']:.0f} GiB bf16 / "
          f"{s['weights_gib_fp8']:.0f} GiB fp8 + latent cache {s['latent_cache_gib']:.1f} GiB -> "
          f"{s['gpus_bf16']} GPUs (bf16) or {s['gpus_fp8']} (fp8)")
    if "axk1_report" in p:
        r = p["axk1_report"]
        print(f"  vs the A.X K1 report (10T tokens, 1,024 H200, ~75 days): report {r['report_flops']:.3g} FLOPs, "
              f"k1 {r['k1_flops']:.3g} ({100 * r['difference']:+.1f}%); implied MFU "
              f"{100 * r['implied_mfu_report_flops']:.1f}% (report FLOPs) / {100 * r['implied_mfu_k1_flops']:.1f}% (k1 FLOPs)")
