#!/usr/bin/env bash
# The main job: prepares the machine if needed, then runs the layer benchmark (dense vs EUGen).
# Extra arguments go to `eugen bench layers` (e.g. --quick, --output bench.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
exec "$root/.venv/bin/eugen" bench layers "$@"
