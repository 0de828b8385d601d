"""Run folders written before the role layout (eugen_nerf.nerf.model, .trainer, .data, ...) still load."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from eugen_nerf.nerf.engine.safe_config import load_run_config
from eugen_nerf.nerf.legacy_paths import MOVED_MODULES

# config.yml files that the flat layout's code wrote (one per method), as ns-train saves them
LEGACY_CONFIGS = Path(__file__).parent / "legacy_configs"


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_old_module_path_is_the_moved_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new  # the module keeps its own identity


@pytest.mark.parametrize("method", ["eugen_nerf", "eugen_dnerf", "eugen_mipnerf360", "eugen_zipnerf"])
def test_config_written_under_the_old_layout_loads_as_the_current_classes(method):
    from eugen_nerf.nerf.methods import registry

    text = (LEGACY_CONFIGS / f"{method}.yml").read_text()
    assert "eugen_nerf.nerf.trainer." in text and "eugen_nerf.nerf.data." in text  # really the old paths
    config = load_run_config(text, f"{method}.yml")  # as every command reads a run's config.yml
    current = getattr(registry, method).config
    assert type(config) is type(current) and config._target is current._target
    model, current_model = config.pipeline.model, current.pipeline.model
    assert type(model) is type(current_model) and model._target is current_model._target
    assert type(config.pipeline.datamanager) is type(current.pipeline.datamanager)
    assert config.method_name == current.method_name
    # the layers as they were trained then: without the soft normalisation that is now the default
    assert model.eugen.soft_normalize is False and current_model.eugen.soft_normalize is True
    assert "eugen_nerf.nerf.methods." in yaml.dump(config)  # saved again, it names the new paths


def test_a_zipnerf_run_written_before_its_reference_recipe_loads_as_it_trained():
    config = load_run_config((LEGACY_CONFIGS / "eugen_zipnerf.yml").read_text(), "eugen_zipnerf.yml")
    model = config.pipeline.model
    # without the grid's x10 feature scale its checkpoint would render features ten times too large
    assert (model.grid_feature_scale, model.dense_init, model.interlevel_loss_mult, model.hash_decay_mult) == (
        1.0, "torch", 1.0, 0.1)
    from eugen_nerf.nerf.methods.zipnerf import EUGenZipNeRFModelConfig

    fresh = EUGenZipNeRFModelConfig()
    assert (fresh.grid_feature_scale, fresh.dense_init, fresh.interlevel_loss_mult) == (10.0, "he", 0.01)


def test_a_mipnerf360_run_written_before_its_reference_recipe_loads_as_it_trained():
    config = load_run_config((LEGACY_CONFIGS / "eugen_mipnerf360.yml").read_text(), "eugen_mipnerf360.yml")
    model = config.pipeline.model
    # its checkpoint's first layer reads the 3-axis encoding: the icosahedron's would not fit it
    assert (model.position_basis, model.dense_init) == ("axes", "torch")
    from eugen_nerf.nerf.methods.mipnerf360 import EUGenMipNeRF360ModelConfig

    fresh = EUGenMipNeRF360ModelConfig()
    assert (fresh.position_basis, fresh.dense_init, fresh.collider_params["near_plane"]) == ("icosahedron", "he", 0.2)
