"""Embedded scenes and benchmark results; the scenes are installed as the package data `eugen_nerf.resources.scenes`."""
