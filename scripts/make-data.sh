#!/usr/bin/env bash
# Regenerates the embedded default scenes in data/ byte for byte (deterministic from the seeds below).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
eugen="$root/.venv/bin/eugen"
cd "$root"
rm -rf data/blender data/dnerf data/unbounded data/rgbd data/blender-fine data/dnerf-fine data/unbounded-fine
"$eugen" scene blender   --output data/blender   --seed 0
"$eugen" scene dnerf     --output data/dnerf     --seed 0
"$eugen" scene unbounded --output data/unbounded --seed 0
"$eugen" scene rgbd      --output data/rgbd      --seed 0
# the harder scenes of the quality benchmark: fine texture, thin structures, a specular highlight
"$eugen" scene blender   --output data/blender-fine   --seed 0 --fine-detail --specular 0.5
"$eugen" scene dnerf     --output data/dnerf-fine     --seed 0 --fine-detail --specular 0.5
"$eugen" scene unbounded --output data/unbounded-fine --seed 0 --fine-detail --specular 0.5
