"""Decoder blocks through torch.compile for training (Transformer.compile_blocks, the train config's
`compile` key) give the eager losses and gradients."""

import copy
import shutil

import pytest
import torch

from tests.helpers import tiny_model

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(ids[:, :-1], labels=ids[:, 1:], return_mtp=True)
    loss = out["loss"] + 0.3 * out["mtp_losses"][0]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@needs_compiler
def test_compiled_blocks_match_eager_losses_and_gradients():
    # fp32, so any difference is the compiler's; enough tokens that every expert's group is padded
    eager = tiny_model(seed=11).train()
    compiled = copy.deepcopy(eager).compile_blocks()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    for moe in (eager.model.layers[1].mlp, compiled.model.layers[1].mlp):
        moe.record_routing = True
    torch.manual_seed(0)
    for _ in range(2):  # the second step runs the compiled code, not the first trace
        ids = torch.randint(0, eager.config.vocab_size, (4, 65))
        want_loss, want = _loss_and_grads(eager, ids)
        got_loss, got = _loss_and_grads(compiled, ids)
        torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
        # the load balancer's routing record comes through the compiled block
        assert torch.equal(compiled.model.layers[1].mlp.last_routing[0], eager.model.layers[1].mlp.last_routing[0])
    # ... and the compiled code ran: a block that failed to compile would have dropped it
    assert all(block._compiled_forward is not None for block in [*compiled.model.layers, compiled.mtp[0].block])


@needs_compiler
def test_new_routings_compile_no_new_graphs():
    """Grouped MoE's row count changes with every routing: it runs outside the graphs, so steps
    after the first compile nothing (a graph per row count reached dynamo's recompile limit within
    a few steps of real training)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = tiny_model(seed=13).train().compile_blocks()
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        ids = torch.randint(0, model.config.vocab_size, (4, 65), generator=generator)
        _loss_and_grads(model, ids)
        if step == 1:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_blocks_serve_only_forward_passes_with_gradients():
    model = tiny_model(seed=12).train()
    calls = []
    for block in model.model.layers:
        block._compiled_forward = lambda *a, _f=block._forward: calls.append(1) or _f(*a)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        model(ids)
        model.generate([[3, 4, 5]], max_new_tokens=3)
    assert calls == []
    model(ids)
    assert len(calls) == len(model.model.layers)


def test_failed_block_compile_trains_eagerly_with_a_warning():
    model = tiny_model(seed=13).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    want_loss, want = _loss_and_grads(copy.deepcopy(model), ids)

    def broken(*args):
        raise torch._dynamo.exc.TorchDynamoException("no compiler here")

    for block in model.model.layers:
        block._compiled_forward = broken
    with pytest.warns(UserWarning, match="compiling a decoder block failed"):
        got_loss, got = _loss_and_grads(model, ids)
    torch.testing.assert_close(got_loss, want_loss)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)
    assert all(block._compiled_forward is None for block in model.model.layers)


@needs_compiler
def test_trainer_compile_key_trains_as_eager(tmp_path):
    import numpy as np

    from k1.train import TrainConfig, run

    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.random.default_rng(0).integers(0, 120, 4000).astype(np.uint16))

    def losses(compile_: bool):
        cfg = TrainConfig(data=str(tokens), out_dir=str(tmp_path / f"c{compile_}"), seq_len=32, batch_size=4,
                          max_steps=2, warmup_steps=1, eval_every=2, save_every=2, eval_batches=1, precision="fp32",
                          peak_tflops=1.0, compile=compile_,
                          model_overrides={"vocab_size": 128, "num_hidden_layers": 2, "hidden_size": 64,
                                           "intermediate_size": 128, "moe_intermediate_size": 32})
        res = run(cfg, progress=False)
        return [h["loss"] for h in res.history], res.val_loss

    eager, compiled = losses(False), losses(True)
    assert compiled[0] == pytest.approx(eager[0], rel=1e-4)
    assert compiled[1] == pytest.approx(eager[1], rel=1e-4)
