#!/usr/bin/env bash
# The test suite: installs what it needs on first use, then runs pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
# The reference PyTorch EfficientNet-Lite, to check our TF ports against (tests only).
# torch 2.13.0 is a CPU build; setuptools stays < 81 for tensorflow_hub.
if ! python -c "import torch, efficientnet_lite_pytorch" 2>/dev/null; then
  echo "skinfeat: installing the PyTorch reference for the port tests" >&2
  python -m pip install -q torch==2.13.0 "setuptools<81"
  python -m pip install -q --no-deps efficientnet-lite-pytorch==0.1.0
fi
# A real headless browser for the HTML report test (Debian's chromium).
if ! command -v chromium >/dev/null 2>&1; then
  echo "skinfeat: installing Debian's chromium for the report test" >&2
  { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
    || echo "skinfeat: could not install chromium; the report test will fail" >&2
fi
# One worker per core (pytest-xdist), each test file on one worker: many tests keep
# one core busy (a subprocess, a single-threaded head, TFLite), so two workers
# halve the wall time on 2 cores. Files go out in collection order (tests/conftest.py
# puts the longest first), not by their number of tests. The workers share the
# session's module cache.
python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder "$@"
