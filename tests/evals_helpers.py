"""Helpers for the eval tests: where the shared data lives, and tiny models: a byte-level BPE tokenizer with a think-aware chat template and a
random A.X K1 (transformers' AXK1 classes) a few thousand parameters big, saved as a model directory.

`memorize` trains such a model for a few seconds until it reproduces given texts greedily, which
gives tests a model whose right answers are known.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data(*parts: str) -> Path:
    """A file under shared/data (found above the checkout, or at $K1_SHARED_DATA); skips when absent."""
    roots = [Path(os.environ["K1_SHARED_DATA"])] if os.environ.get("K1_SHARED_DATA") else []
    roots += [p / "shared" / "data" for p in Path(__file__).resolve().parents]
    for root in roots:
        if root.is_dir():
            path = root.joinpath(*parts)
            if path.exists():
                return path
    pytest.skip(f"shared/data/{'/'.join(parts)} is not present")


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3-style: non-think mode closes an empty reasoning block in the prompt; think mode opens one.
CHAT_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- else %}<think>\n{%- endif %}{%- endif %}"
)

CORPUS = [
    "안녕하세요. 정답은 42입니다. 단계별로 풀이하고, 최종 답을 \\boxed{} 안에 쓰세요.",
    "Please reason step by step, and put your final answer within \\boxed{}. The answer is 7.",
    "def add(a, b):\n    return a + b\n",
    "비가 왔다. 그래서 우산을 썼다. 질문: 답변: 예 아니오",
]


def tiny_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE if chat else None,
    )


def tiny_model(tokenizer, seed: int = 0, moe: bool = True):
    import torch
    from transformers import AutoModelForCausalLM, AXK1Config

    cfg = AXK1Config(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        moe_intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        n_shared_experts=1,
        n_routed_experts=4,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=2,
        kv_lora_rank=16,
        q_lora_rank=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        qk_nope_head_dim=16,
        max_position_embeddings=1024,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        mlp_layer_types=["dense", "sparse" if moe else "dense"],
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def memorize(model, tokenizer, pairs: list[tuple[str, str]], steps: int = 200, lr: float = 1e-2):
    """Overfit `model` to answer each (prompt, target) pair with target (loss on the target only)."""
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    texts = [p + t for p, t in pairs]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for row, (p, _) in enumerate(pairs):
        labels[row, : len(tokenizer(p, add_special_tokens=False)["input_ids"])] = -100
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    return loss.item()


def fake_logprob(ch: str) -> float:
    """The fake endpoint's log-probability of a character (its tokens are characters)."""
    return -(ord(ch) % 5) - 0.25


class FakeOpenAI:
    """A tiny OpenAI-compatible server on 127.0.0.1 for tests: answers come from `answer(prompt)`.

    `answer` returns (reasoning, content); reasoning is sent as `reasoning_content` when the request
    asked for thinking. /v1/completions with echo returns per-character prompt log-probabilities.
    """

    def __init__(self, answer, key: str | None = None):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if key and self.headers.get("Authorization") != f"Bearer {key}":
                    self._send(401, {"error": {"message": "bad key"}})
                    return False
                return True

            def do_GET(self):
                if self._authorized():
                    self._send(200, {"data": [{"id": "fake-k1", "object": "model"}]})

            def do_POST(self):
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                if self.path.endswith("/chat/completions"):
                    prompt = body["messages"][-1]["content"]
                    think = bool((body.get("chat_template_kwargs") or {}).get("enable_thinking"))
                    reasoning, content = answer(prompt)
                    message = {"role": "assistant", "content": content}
                    if think and reasoning:
                        message["reasoning_content"] = reasoning
                    used = len(content) + (len(reasoning) if think and reasoning else 0)
                    self._send(
                        200,
                        {
                            "choices": [{"message": message, "finish_reason": "stop"}],
                            "usage": {"completion_tokens": used},
                        },
                    )
                elif body.get("echo"):
                    text = body["prompt"]
                    values = [None] + [fake_logprob(c) for c in text[1:]] + [-1.0]
                    offsets = list(range(len(text))) + [len(text)]
                    self._send(
                        200,
                        {
                            "choices": [
                                {
                                    "text": text + "x",
                                    "finish_reason": "length",
                                    "logprobs": {
                                        "tokens": list(text) + ["x"],
                                        "token_logprobs": values,
                                        "text_offset": offsets,
                                    },
                                }
                            ]
                        },
                    )
                else:
                    _, content = answer(body["prompt"])
                    self._send(
                        200,
                        {
                            "choices": [{"text": content, "finish_reason": "stop"}],
                            "usage": {"completion_tokens": len(content)},
                        },
                    )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class one_thread:  # noqa: N801 - used like a function: `with one_thread():`
    """Run tiny models on one thread: on a busy two-core machine, two threads are many times slower."""

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)
