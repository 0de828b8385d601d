"""The `ns-train` methods of this package (entry-point group `nerfstudio.method_configs`).

Importing this module (every ns-* command does, through the entry points) turns on torch's huge-page
CPU allocator, the one-line printing of `InputError`s, and the reading of run config.yml files that
builds only config classes; see `eugen_nerf.runtime`, `eugen_nerf.errors`, `eugen_nerf.nerf.engine.safe_config`.
"""

from __future__ import annotations

from eugen_nerf.errors import install_excepthook, report_in_one_line
from eugen_nerf.nerf.engine.safe_config import protect_nerfstudio_config_loading
from eugen_nerf.resources import embedded_scene
from eugen_nerf.runtime import enable_huge_page_allocation, quiet_known_warnings

enable_huge_page_allocation()
quiet_known_warnings()
install_excepthook()
protect_nerfstudio_config_loading()

import torch  # noqa: E402
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig  # noqa: E402
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig  # noqa: E402
from nerfstudio.data.dataparsers.dnerf_dataparser import DNeRFDataParserConfig  # noqa: E402
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig  # noqa: E402
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig  # noqa: E402
from nerfstudio.plugins.types import MethodSpecification  # noqa: E402

from eugen_nerf.layers.eugen import NonFiniteInputError  # noqa: E402
from eugen_nerf.layers.mlp import EUGenConfig  # noqa: E402
from eugen_nerf.nerf.engine.datamanager import CenterCropPixelSamplerConfig, EUGenDataManagerConfig  # noqa: E402
from eugen_nerf.nerf.engine.optimizers import AdamWithBetasConfig  # noqa: E402
from eugen_nerf.nerf.engine.pipeline import EUGenPipelineConfig  # noqa: E402
from eugen_nerf.nerf.engine.trainer import EUGenTrainerConfig  # noqa: E402
from eugen_nerf.nerf.methods.dnerf import EUGenDNeRFModelConfig  # noqa: E402
from eugen_nerf.nerf.methods.mipnerf360 import EUGenMipNeRF360ModelConfig  # noqa: E402
from eugen_nerf.nerf.methods.nerf import EUGenNeRFModelConfig  # noqa: E402
from eugen_nerf.nerf.methods.zipnerf import EUGenZipNeRFModelConfig  # noqa: E402

report_in_one_line(NonFiniteInputError)  # e.g. ns-export's point cloud, which renders without FiniteRenders


def default_device_type() -> str:
    """nerfstudio defaults to CUDA and crashes deep inside without it; pick what this machine has."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def trainer_defaults() -> dict:
    """What every method here shares: local device, tensorboard, a viewer only on 127.0.0.1."""
    return {
        "machine": MachineConfig(device_type=default_device_type()),
        "vis": "tensorboard",
        "viewer": ViewerConfig(websocket_host="127.0.0.1", quit_on_train_completion=True),
    }


def adam_with_decay(lr: float = 5e-4, lr_final: float = 5e-5, eps: float = 1e-8, warmup_steps: int = 0,
                    betas: tuple[float, float] = (0.9, 0.999), lr_pre_warmup: float = 1e-8,
                    max_norm: float | None = None) -> dict:
    """The NeRF paper's optimizer: Adam, learning rate decayed exponentially by 10x over training
    (EUGenTrainer sets the decay's length to --max-num-iterations), after an optional warm-up: nerfstudio's
    sine ramp from `lr_pre_warmup` over `warmup_steps` (`--optimizers.NAME.scheduler.warmup-steps`,
    `lr-pre-warmup`); gradients of the group clipped to norm `max_norm` (`--optimizers.NAME.optimizer.max-norm`).

    nerfstudio's vanilla-nerf uses RAdam at a constant 5e-4 instead (docs/methods/eugen-nerf.md says why not).
    """
    return {
        "optimizer": AdamWithBetasConfig(lr=lr, eps=eps, betas=betas, max_norm=max_norm),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, warmup_steps=warmup_steps,
                                                     lr_pre_warmup=lr_pre_warmup),
    }


def method(name: str, description: str, dataparser, model, optimizers: dict, max_num_iterations: int = 200_000,
           **datamanager) -> MethodSpecification:
    """A method of this package: our trainer (safe, resumable checkpoints), nerfstudio's vanilla
    pipeline (data-parallel on CPUs too) and data manager (with scene checks), a default embedded scene and
    trainer_defaults()."""
    return MethodSpecification(
        config=EUGenTrainerConfig(
            method_name=name,
            max_num_iterations=max_num_iterations,
            steps_per_eval_batch=500,
            steps_per_save=1000,
            pipeline=EUGenPipelineConfig(
                datamanager=EUGenDataManagerConfig(dataparser=dataparser, **datamanager), model=model),
            optimizers=optimizers,
            **trainer_defaults(),
        ),
        description=f"{description} (--pipeline.model.layer dense: the dense twin)",
    )


# Paper scale (NeRF: 1024 rays as nerfstudio's vanilla-nerf, 64 + 128 samples); on a CPU use the
# preset `eugen train nerf-cpu` (configs/nerf-cpu.yml). nerf-pytorch's Blender recipe draws the first 500
# steps' rays from the central half of each image: without it the dense twin can stay in the
# all-background solution (docs/methods/eugen-nerf.md). The seven-layer EUGen chain of the full field needs
# trained projections to keep up with the dense field (docs/results/stable-layers.md).
eugen_nerf = method(
    "eugen-nerf", "vanilla NeRF with EUGen layers in its field MLPs",
    BlenderDataParserConfig(data=embedded_scene("blender")),
    EUGenNeRFModelConfig(eugen=EUGenConfig(trainable_projection=True)),
    {"fields": adam_with_decay(), "temporal_distortion": adam_with_decay()},
    pixel_sampler=CenterCropPixelSamplerConfig(precrop_steps=500),
)

# nerfstudio's dnerf at paper scale (canonical NeRF 8x256, deformation 3x256 + linear); on a CPU use
# `eugen train dnerf-cpu`.
eugen_dnerf = method(
    "eugen-dnerf", "D-NeRF with EUGen layers in its canonical field and deformation MLPs",
    DNeRFDataParserConfig(data=embedded_scene("dnerf")), EUGenDNeRFModelConfig(),
    {"fields": adam_with_decay(), "temporal_distortion": adam_with_decay()},
)

# mip-NeRF 360 at paper scale (NeRF MLP 8x1024, proposals 4x256, 64 + 64 + 32 samples, 4096 rays) with its
# optimizer: Adam 2e-3 decayed to 2e-5 over 250k steps, eps 1e-6, after a 512-step sine warm-up from 1% of the
# rate, each MLP group's gradient clipped to norm 1e-3 (multinerf's configs.py); on a CPU use
# `eugen train mipnerf360-cpu`.
MIPNERF360_WARMUP_STEPS = 512
eugen_mipnerf360 = method(
    "eugen-mipnerf360", "mip-NeRF 360 with EUGen layers in its NeRF and proposal MLPs",
    NerfstudioDataParserConfig(data=embedded_scene("unbounded")), EUGenMipNeRF360ModelConfig(),
    {name: adam_with_decay(2e-3, 2e-5, eps=1e-6, warmup_steps=MIPNERF360_WARMUP_STEPS, lr_pre_warmup=2e-5,
                           max_norm=1e-3)
     for name in ("fields", "proposal_networks")},
    max_num_iterations=250_000, train_num_rays_per_batch=4096,
)

# Zip-NeRF at paper scale (hash grid 10x4 to 8192 with 2^21 entries per level, 64 + 64 + 32 samples,
# Adam 1e-2 decayed to 1e-3 over 25k steps with betas 0.9 / 0.99 and eps 1e-15 as hash grids want, after Zip-NeRF's
# 5,000-step warm-up (its lr_delay_steps, a sine ramp from ~0); 4096 rays per batch where Zip-NeRF
# used 65536); on a CPU use `eugen train zipnerf-cpu`.
ZIPNERF_WARMUP_STEPS = 5_000
eugen_zipnerf = method(
    "eugen-zipnerf", "Zip-NeRF (torch or tiny-cuda-nn hash grid) with EUGen layers in its NeRF and proposal MLPs",
    NerfstudioDataParserConfig(data=embedded_scene("unbounded")), EUGenZipNeRFModelConfig(),
    {name: adam_with_decay(1e-2, 1e-3, eps=1e-15, warmup_steps=ZIPNERF_WARMUP_STEPS, betas=(0.9, 0.99))
     for name in ("fields", "proposal_networks")},
    max_num_iterations=25_000, train_num_rays_per_batch=4096,
)
