#!/usr/bin/env bash
# The test suite: installs what it needs on first use, then runs pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
python -m pytest -q "$@"
