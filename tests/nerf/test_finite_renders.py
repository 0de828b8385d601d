"""Evaluation and rendering are as safe as training: renders far from the training cameras stay
finite, and a non-finite value ends in the one-line error, in ns-eval and in training's evaluation."""

from __future__ import annotations

import pytest
import torch

from eugen_nerf.layers import EUGenLinear
from eugen_nerf.nerf.engine.finite import RenderNotFinite
from eugen_nerf.nerf.engine.runs import load_pipeline
from eugen_nerf.nerf.engine.trainer import TrainingDiverged


def far_camera(pipeline):
    """A test camera moved to twice its distance from the scene centre (rays start at the camera: near 0)."""
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    camera.camera_to_worlds[..., :3, 3] *= 2
    return camera


def test_renders_beyond_the_training_cameras_stay_finite(tiny_runs):
    pipeline, _, _ = load_pipeline(tiny_runs["eugen"], "run")
    with torch.no_grad():
        for parameter in pipeline.model.parameters():
            parameter.mul_(2)  # weights grown in training
        outputs = pipeline.model.get_outputs_for_camera(far_camera(pipeline))
        assert all(torch.isfinite(outputs[name]).all() for name in ("rgb", "depth", "accumulation"))
        # the same field with the theory's raw layers overflows, and says so in one line
        for module in pipeline.model.modules():
            if isinstance(module, EUGenLinear):
                module.soft_normalize = False
        for parameter in pipeline.model.parameters():
            parameter.mul_(2)
        with pytest.raises(RenderNotFinite, match="NaN or infinite"):
            pipeline.model.get_outputs_for_camera(far_camera(pipeline))


@pytest.mark.parametrize("poisoned, reported", [
    ("field_coarse.mlp_base.layers.0.bias", "NaN or infinite values reached an EUGen layer in evaluation"),
    # after the last EUGen layer: nerfstudio's renderers would hide it (NaN -> 0); the field check does not
    ("field_fine.field_heads.0.net.bias", "in evaluation, rendering stopped: the field's rgb holds NaN"),
])
def test_non_finite_evaluation_during_training_is_the_divergence_error(
    tiny_blender, tmp_path, reduced_config, train, poisoned, reported
):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    trainer = train(config)
    trainer.config.steps_per_eval_batch = trainer.config.steps_per_eval_image = 1  # evaluate at the next call
    with torch.no_grad():
        trainer.pipeline.model.get_parameter(poisoned).fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as caught:
        trainer.eval_iteration(2)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("training diverged at step 2:") and reported in message


@pytest.mark.slow
def test_ns_eval_of_a_non_finite_checkpoint_is_one_line(tiny_blender, tmp_path, reduced_config, train, ns):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    train(config)
    (checkpoint,) = config.get_checkpoint_dir().glob("step-*.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    name = next(key for key in state["pipeline"] if key.endswith("field_fine.mlp_base.layers.0.weight"))
    state["pipeline"][name].fill_(float("nan"))
    torch.save(state, checkpoint)
    result = ns("ns-eval", "--load-config", str(config.get_base_dir() / "config.yml"),
                "--output-path", str(tmp_path / "eval.json"))
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "NaN or infinite" in error and "Traceback" not in result.stderr
