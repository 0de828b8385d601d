#!/usr/bin/env bash
# Regenerates the embedded default scenes in data/ byte for byte (deterministic from the seeds below).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
eugen="$root/.venv/bin/eugen"
cd "$root"
rm -rf data/blender data/dnerf data/unbounded data/rgbd
"$eugen" scene blender   --output data/blender   --seed 0
"$eugen" scene dnerf     --output data/dnerf     --seed 0
"$eugen" scene unbounded --output data/unbounded --seed 0
"$eugen" scene rgbd      --output data/rgbd      --seed 0
