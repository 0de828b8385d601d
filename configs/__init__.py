"""Named presets and dataset configs; installed as the package data `eugen_nerf.resources.configs`."""
