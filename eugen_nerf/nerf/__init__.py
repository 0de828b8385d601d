"""The nerfstudio side of eugen-nerf, one folder per role (as nerfstudio's own packages):

- `methods/`: the `ns-train` methods (model configs and models) and their registry (entry points);
- `fields/`: the NeRF field with each MLP layer dense or EUGen, and the layer flags all methods share;
- `components/`: encodings, contraction, multisampling, hash grid, samplers and losses;
- `engine/`: trainer, checkpoints, data manager, metrics, loading a saved run;
- `commands/`: the `eugen train`, `eugen render` and `eugen distill` commands.

Run folders written before this layout pin the old module paths in their config.yml; `legacy_paths`
keeps those importing.
"""

from eugen_nerf.nerf.legacy_paths import install_legacy_paths

install_legacy_paths()
