#!/usr/bin/env bash
# The main job: prepares the machine if needed, then `eugen demo`: trains eugen-nerf and its dense
# twin on the embedded scene (CPU preset), evaluates both, renders an orbit, times both, writes
# outputs/demo/report.md. Extra arguments go to `eugen demo` (e.g. --quick, --output DIR, --steps N).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
export PATH="$root/.venv/bin:$PATH"
cd "$root"
exec eugen demo "$@"
