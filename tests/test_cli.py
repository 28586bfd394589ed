import json
import subprocess
import sys

import pytest

from k1.cli import main


def test_help_lists_stages():
    out = subprocess.run([sys.executable, "-m", "k1", "--help"], capture_output=True, text=True, check=True).stdout
    assert "model" in out


def test_model_info_json_for_the_release(capsys):
    main(["model", "info", "axk1-519b", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert abs(info["params"]["total"] / 519e9 - 1) < 0.01
    assert info["kv_cache_bytes_per_token_bf16"] == 61 * (512 + 64) * 2


def test_unknown_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model", "info", "gigantic"])
    assert exc.value.code == 2
    assert "valid: axk1-519b" in capsys.readouterr().err


def test_model_init_then_check(tmp_path, capsys):
    main(["model", "init", "tiny", "--out", str(tmp_path / "m"), "--vocab-size", "300"])
    main(["model", "check", str(tmp_path / "m")])
    assert "ok:" in capsys.readouterr().out


def test_bare_k1_and_usage_errors_print_help_not_a_traceback():
    for argv in ([], ["train"], ["model", "info", "tiny", "--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "k1", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr and "Usage" in proc.stdout + proc.stderr
