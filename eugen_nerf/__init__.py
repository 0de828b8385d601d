"""eugen-nerf: neural 3D reconstruction with EUGen random-feature layers."""

from eugen_nerf.layers import *  # noqa: F403 - the layer package's public names are the package's
from eugen_nerf.layers import __all__ as __all__

__version__ = "0.1.0"
