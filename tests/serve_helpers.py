"""Shared by the engine and server tests: a tiny tokenizer, tiny models, a live server on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from tests.helpers import tiny_model

CORPUS = (
    "안녕하세요. 오늘은 날씨가 좋습니다. 서울의 날씨를 알려 드릴게요. 한국어 토큰화 테스트입니다.\n"
    "The quick brown fox jumps over the lazy dog. We need a tool to check the weather in Seoul.\n"
    '{"name": "get_weather", "arguments": {"city": "Seoul"}}\n'
) * 30

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# (messages, template options, the reply the parrot model learns to give)
TRANSCRIPTS = [
    (
        [{"role": "user", "content": "날씨 어때?"}],
        {"enable_thinking": True},
        "날씨를 생각한다\n</think>\n\n오늘은 날씨가 좋습니다.<|end|>",
    ),
    (
        [{"role": "user", "content": "Seoul weather?"}],
        {"enable_thinking": True, "tools": [WEATHER_TOOL]},
        'need a tool\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call><|end|>',
    ),
    (
        [{"role": "user", "content": "안녕"}],
        {"enable_thinking": False},
        "안녕하세요. 한국어 토큰화 테스트입니다.<|end|>",
    ),
]


def make_tokenizer(tmp: Path):
    from k1 import tokenizer

    text = tmp / "corpus.txt"
    text.write_text(CORPUS, encoding="utf-8")
    return tokenizer.load(
        tokenizer.train([f"ko:{text}"], 512, tmp / "tok", progress=False, log=lambda *a: None)
    )


def random_model(vocab: int, seed: int = 0):
    """A random tiny model with a sharpened head: logit gaps far above float noise, so greedy output
    does not depend on how requests happen to be batched."""
    model = tiny_model(seed, vocab_size=vocab, max_position_embeddings=1024)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def parrot_model(tok, steps: int = 80, seed: int = 0):
    """A one-layer model (and its MTP head) trained to give TRANSCRIPTS' replies, so reasoning,
    tool calls and speculative decoding are testable end to end. Dense (no MoE) and one layer:
    it memorizes the three replies in ~80 steps, a few seconds on one core."""
    from k1.objectives import next_token_and_mtp

    model = tiny_model(
        seed, vocab_size=512, max_position_embeddings=1024, num_hidden_layers=1, first_k_dense_replace=1
    )
    rows = []
    for messages, options, reply in TRANSCRIPTS:
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, **options)
        rows.append(tok.encode(prompt + reply))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        loss, _ = next_token_and_mtp(model, {"input_ids": ids, "loss_mask": mask}, mtp_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.cache
def fixtures() -> SimpleNamespace:
    """Built once per test session and shared by test_engine and test_serve: a tokenizer, a random
    MoE model, the parrot, and model directories of both."""
    import k1

    root = Path(tempfile.mkdtemp(prefix="k1-serve-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    with one_thread():
        tok = make_tokenizer(root)
        random = random_model(512)
        parrot = parrot_model(tok)
    k1.save(random, root / "random", tokenizer=tok.path)
    k1.save(parrot, root / "parrot", tokenizer=tok.path)
    return SimpleNamespace(
        root=root,
        tok=tok,
        random=random,
        parrot=parrot,
        random_dir=root / "random",
        parrot_dir=root / "parrot",
    )


@contextlib.contextmanager
def one_thread():
    """Tiny models run faster on one torch thread than on several fighting for shared cores
    (measured: a 70K-element mul takes 7 us on one thread, milliseconds on two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LiveServer:
    """uvicorn in a background thread on 127.0.0.1 and a free port."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
