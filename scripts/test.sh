#!/usr/bin/env bash
# The test suite: prepares the machine if needed, checks lint, runs pytest (slow tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"  # ns-* commands and the ffmpeg that ns-render needs
.venv/bin/ruff check eugen_nerf tests
.venv/bin/python -m pytest "$@"
