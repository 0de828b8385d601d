"""Old module paths of `eugen_nerf.nerf`, kept importable for saved runs.

A run's config.yml names its classes by module path (`!!python/object:eugen_nerf.nerf.zipnerf...`), and
nerfstudio imports those paths when it loads the run. The modules moved into role folders; an import
of an old path gets the module that now lives at the new one (the same module object, so the classes
are identical).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

MOVED_MODULES: dict[str, str] = {
    "eugen_nerf.nerf.model": "eugen_nerf.nerf.methods.nerf",
    "eugen_nerf.nerf.dnerf": "eugen_nerf.nerf.methods.dnerf",
    "eugen_nerf.nerf.mipnerf360": "eugen_nerf.nerf.methods.mipnerf360",
    "eugen_nerf.nerf.zipnerf": "eugen_nerf.nerf.methods.zipnerf",
    "eugen_nerf.nerf.proposal_model": "eugen_nerf.nerf.methods.proposal_base",
    "eugen_nerf.nerf.field": "eugen_nerf.nerf.fields.nerf_field",
    "eugen_nerf.nerf.field_config": "eugen_nerf.nerf.fields.field_flags",
    "eugen_nerf.nerf.proposal": "eugen_nerf.nerf.components.proposal_sampler",
    "eugen_nerf.nerf.encodings": "eugen_nerf.nerf.components.encodings",
    "eugen_nerf.nerf.contraction": "eugen_nerf.nerf.components.contraction",
    "eugen_nerf.nerf.multisample": "eugen_nerf.nerf.components.multisample",
    "eugen_nerf.nerf.hashgrid": "eugen_nerf.nerf.components.hashgrid",
    "eugen_nerf.nerf.zipnerf_losses": "eugen_nerf.nerf.components.zipnerf_losses",
    "eugen_nerf.nerf.trainer": "eugen_nerf.nerf.engine.trainer",
    "eugen_nerf.nerf.checkpoints": "eugen_nerf.nerf.engine.checkpoints",
    "eugen_nerf.nerf.data": "eugen_nerf.nerf.engine.datamanager",
    "eugen_nerf.nerf.metrics": "eugen_nerf.nerf.engine.metrics",
    "eugen_nerf.nerf.train": "eugen_nerf.nerf.commands.train_preset",
    "eugen_nerf.nerf.render": "eugen_nerf.nerf.commands.time_sweep",
    "eugen_nerf.nerf.distill": "eugen_nerf.nerf.commands.distill_run",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.target_spec = None

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed by its own import; importlib has just given it the old
        path's spec, so give it back its own (reload and pickling go by it)."""
        module.__spec__ = self.target_spec


class _LegacyPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install_legacy_paths() -> None:
    if not any(isinstance(finder, _LegacyPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LegacyPathFinder())
