"""The `ns-train` methods: eugen-nerf, eugen-dnerf, eugen-mipnerf360 and eugen-zipnerf (`registry`)."""

from typing import Any

_SPECIFICATIONS = ("eugen_nerf", "eugen_dnerf", "eugen_mipnerf360", "eugen_zipnerf")


def __getattr__(name: str) -> Any:
    """The method specifications under the package path too (`eugen_nerf.nerf.methods:eugen_nerf`), imported
    only when asked for: importing one model module need not build every method."""
    if name in _SPECIFICATIONS:
        from eugen_nerf.nerf.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
