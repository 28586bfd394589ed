"""`k1 demo --fast` end to end, as a user runs it, plus its refusal modes."""

import json
import os

import pytest

from k1.cli import main


@pytest.mark.slow
def test_demo_fast_end_to_end_and_rerun_skips(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--fast", "--out", str(out)])
    err = capsys.readouterr().err
    assert "k1 demo finished" in err and "0 leaked" in err
    for name in ("report.md", "report.html"):
        assert (out / name).is_file()
    report = (out / "report.md").read_text()
    assert "curate" in report and "pretrain" in report
    model_dir = json.loads((out / "pretrain" / "stage.json").read_text())["result"]["model_dir"]
    import k1

    k1.load(model_dir)
    transformers = pytest.importorskip("transformers")
    transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(model_dir)

    main(["demo", "--fast", "--out", str(out)])
    assert "done before" in capsys.readouterr().err


def test_demo_refuses_an_unwritable_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--fast", "--out", str(locked / "demo")])
        assert exc.value.code == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        os.chmod(locked, 0o700)


def test_demo_refuses_a_file_as_output(tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--fast", "--out", str(f)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_demo_refuses_a_full_disk(tmp_path, capsys, monkeypatch):
    import collections

    import k1.demo

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(k1.demo.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--fast", "--out", str(tmp_path / "demo")])
    assert exc.value.code == 2
    assert "only 5 MiB free" in capsys.readouterr().err
