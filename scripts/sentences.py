#!/usr/bin/env python3
"""Real English sentences for calibration and evaluation of one-shot pruning, from the Debian
`fortunes` package (quotations). Writes data/sentences/calib.txt and eval.txt, disjoint, one
sentence per line, chosen with a fixed seed so the files are reproducible:

    apt-get install -y fortunes && python3 scripts/sentences.py
"""
import random
import re
import sys
from pathlib import Path

SOURCES = ["wisdom", "science", "literature", "people", "fortunes"]
ROOT = Path("/usr/share/games/fortunes")
SEED = 20261128
N_CALIB, N_EVAL = 1024, 128


def quotes(path):
    text = path.read_text(encoding="latin-1")
    for block in text.split("\n%\n"):
        lines = [l.strip() for l in block.splitlines()]
        # Drop attributions ("-- Mark Twain") and empty lines; keep the quotation itself.
        lines = [l for l in lines if l and not l.startswith("--")]
        s = re.sub(r"\s+", " ", " ".join(lines)).strip()
        if 40 <= len(s) <= 300 and s.isascii() and re.search(r"[a-z]", s):
            yield s


def main():
    seen, pool = set(), []
    for name in SOURCES:
        for s in quotes(ROOT / name):
            if s not in seen:
                seen.add(s)
                pool.append(s)
    random.Random(SEED).shuffle(pool)
    if len(pool) < N_CALIB + N_EVAL:
        sys.exit(f"only {len(pool)} sentences found under {ROOT}")
    out = Path(__file__).resolve().parent.parent / "data" / "sentences"
    out.mkdir(parents=True, exist_ok=True)
    # Evaluation first, so a larger calibration set never changes the held-out sentences.
    (out / "eval.txt").write_text("\n".join(pool[:N_EVAL]) + "\n")
    (out / "calib.txt").write_text("\n".join(pool[N_EVAL:N_EVAL + N_CALIB]) + "\n")
    print(f"{len(pool)} sentences; wrote {N_CALIB} to calib.txt and {N_EVAL} to eval.txt in {out}")


if __name__ == "__main__":
    main()
