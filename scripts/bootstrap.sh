#!/usr/bin/env bash
# Create .venv (or reuse it) and install convbench with its development tools.
#
# torch is installed first and pinned, so that pip keeps the CPU build this machine provides and
# never resolves a multi-GB CUDA build. On a GPU machine, install a CUDA build of torch into the
# environment yourself before running this script (see README). recbole is installed without its
# dependencies: convbench only reads the MovieLens-100K files that ship inside its wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -m pip install --quiet --no-deps "recbole==1.2.1"
"$VENV/bin/python" -c "import torch; print(f'convbench environment ready in $VENV (torch {torch.__version__})')"
