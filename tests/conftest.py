import os

import pytest
import torch

# Two cores on CI; keep torch from oversubscribing them when tests run model code.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def shared_data():
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread and lose a lot when the cores are busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A 1,024-token k1 tokenizer trained on the corpus k1 ships (seconds, no downloads)."""
    from k1.tokenizer import train_default

    out = tmp_path_factory.mktemp("tok") / "tok"
    train_default(out, vocab_size=1024, progress=False, log=lambda *_: None, threads=1)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    from k1.tokenizer import load

    return load(tok_dir)
