"""Fill the reference-tokenizer cache (GPT-4o o200k, GPT-4 cl100k, DeepSeek-V3) from a package registry.

    python bench/fetch_reference_tokenizers.py [--dir DIR]

The files come from the litellm wheel on PyPI, which ships them for offline token counting: the wheel
is downloaded with pip (no dependencies, not installed), the three files are copied out, the wheel is
deleted. They land in $K1_REFERENCE_TOKENIZERS or ~/.cache/k1/reference_tokenizers, never in the repo.
tiktoken checks the .tiktoken files against OpenAI's published sha256 when `k1 tokenizer report` loads them.
Mistral's Tekken and SentencePiece files need no fetching: they ship inside mistral-common.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k1.tokenizer.fertility import reference_dir  # noqa: E402

# Names inside the wheel (tiktoken's cache names: sha1 of the download URL) -> names in our cache.
FILES = {
    "litellm/litellm_core_utils/tokenizers/fb374d419588a4632f3f557e76b4b70aebbca790": "o200k_base.tiktoken",
    "litellm/litellm_core_utils/tokenizers/9b5ad71b2ce5302211f9c61530b329a4922fc6a4": "cl100k_base.tiktoken",
    "litellm/litellm_core_utils/tokenizers/deepseek_tokenizer.json": "deepseek_v3_tokenizer.json",
    "litellm/litellm_core_utils/tokenizers/deepseek_tokenizer_LICENSE": "deepseek_v3_LICENSE",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=reference_dir(), help="where to put the files")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if all((args.dir / name).is_file() for name in FILES.values()):
        print(f"already there: {args.dir}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            "litellm",
        ]
        if subprocess.run(cmd).returncode != 0:
            print("pip download litellm failed: no package registry here? The report skips these references.")
            return 1
        wheel = next(Path(tmp).glob("litellm-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for inner, name in FILES.items():
                if inner not in names:
                    print(f"{wheel.name} has no {inner}; skipped {name}")
                    continue
                (args.dir / name).write_bytes(zf.read(inner))
                print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
