"""nerfstudio's VanillaDataManager, with the scene checked before training starts.

nerfstudio fails on a missing or broken file, an image of the wrong size or a broken pose deep inside a
parser or data loader, with a traceback; here the transforms files, every listed image (readable to its
end, of its camera's size) and every pose are checked up front, and a problem is one line naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.dnerf_dataparser import DNeRFDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from PIL import Image

from eugen_nerf.errors import InputError
from eugen_nerf.poses import first_bad_pose


def check_images(outputs: DataparserOutputs, split: str) -> None:
    """Every image of a split exists, is readable to its end and has its camera's size."""
    cameras = outputs.cameras
    for index, filename in enumerate(outputs.image_filenames):
        path = Path(filename)
        if not path.is_file():
            raise InputError(f"{path}: image of the {split} split not found")
        try:
            with Image.open(path) as image:
                width, height = image.size
                image.load()  # a truncated file fails here, not later inside a data loader
        except (OSError, SyntaxError) as error:
            raise InputError(f"{path}: not a readable image ({error})") from None
        expected = int(cameras.width[index]), int(cameras.height[index])
        if (width, height) != expected:
            raise InputError(
                f"{path}: image is {width}x{height} but its camera is {expected[0]}x{expected[1]} "
                f"(all images of a Blender scene share the first image's size)"
            )


INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def read_transforms(path: Path) -> dict:
    """A transforms JSON file as a dict with a non-empty `frames` list, each frame a dict."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable transforms JSON file ({error})") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(frame, dict) for frame in frames):
        raise InputError(f"{path}: needs a non-empty \"frames\" list of objects")
    return data


def check_transforms(dataparser, data: Path) -> None:
    """The scene's transforms files before nerfstudio's parser reads them (it fails with bare KeyErrors
    or a JSONDecodeError that names no file): Blender and D-NeRF splits with their `camera_angle_x` (and a
    time per D-NeRF frame), a nerfstudio-data transforms.json with its intrinsics."""
    if isinstance(dataparser, NerfstudioDataParserConfig):
        path = data if data.suffix == ".json" else data / "transforms.json"
        if not path.is_file():
            return  # nerfstudio's own message names a missing transforms file
        transforms = read_transforms(path)
        for index, frame in enumerate(transforms["frames"]):
            missing = [key for key in INTRINSICS if key not in frame and key not in transforms]
            if missing:
                raise InputError(f"{path}: frame {index} has no {', '.join(missing)} (nerfstudio-data needs the "
                                 "intrinsics fl_x, fl_y, cx, cy, w, h, at the top or per frame)")
        return
    if not isinstance(dataparser, BlenderDataParserConfig | DNeRFDataParserConfig):
        return
    for split in ("train", "val", "test"):
        path = data / f"transforms_{split}.json"
        if not path.is_file():
            continue  # nerfstudio's own message names a missing transforms file
        transforms = read_transforms(path)
        if "camera_angle_x" not in transforms:
            raise InputError(f"{path}: no \"camera_angle_x\" (the horizontal field of view, in radians)")
        if isinstance(dataparser, DNeRFDataParserConfig):
            frames = transforms["frames"]
            missing = [index for index, frame in enumerate(frames) if "time" not in frame]
            if missing:
                raise InputError(f"{path}: {len(missing)} of {len(frames)} frames have no \"time\" (first: frame "
                                 f"{missing[0]}); a D-NeRF scene (dnerf-data) needs a time in [0, 1] per frame")


def check_poses(outputs: DataparserOutputs, split: str) -> None:
    """Every camera pose is finite and rigid (a rotation and a translation), or one line names its image."""
    bad = first_bad_pose(outputs.cameras.camera_to_worlds)
    if bad is not None:
        index, what = bad
        raise InputError(f"{Path(outputs.image_filenames[index]).name}: the {split} camera pose (frame {index}) {what}")


def float32_cameras(outputs: DataparserOutputs) -> DataparserOutputs:
    """nerfstudio's Blender parser leaves fx/fy as float64 (numpy focal length), which breaks
    `ns-render spiral` (torch.cross of float and double); every camera tensor becomes float32."""
    cameras = outputs.cameras
    for name in ("camera_to_worlds", "fx", "fy", "cx", "cy"):
        value = getattr(cameras, name)
        if value.dtype == torch.float64:
            setattr(cameras, name, value.float())
    return outputs


class CenterCropPixelSampler(PixelSampler):
    """nerfstudio's pixel sampler, drawing only from the central part of each image for the first
    steps (the original NeRF's "precrop" for object scenes on a plain background: without it a NeRF
    can sit for hundreds of steps in the all-background solution before it finds the object)."""

    config: CenterCropPixelSamplerConfig
    step: int = 0

    def sample_method(self, batch_size, num_images, image_height, image_width, mask=None, device="cpu"):
        if self.step >= self.config.precrop_steps or mask is not None:
            return super().sample_method(batch_size, num_images, image_height, image_width, mask, device)
        fraction = self.config.precrop_fraction
        crop_h, crop_w = max(1, round(image_height * fraction)), max(1, round(image_width * fraction))
        low = torch.tensor([0, (image_height - crop_h) // 2, (image_width - crop_w) // 2], device=device)
        extent = torch.tensor([num_images, crop_h, crop_w], device=device)
        return (torch.rand((batch_size, 3), device=device) * extent).long() + low


@dataclass
class CenterCropPixelSamplerConfig(PixelSamplerConfig):
    _target: type = field(default_factory=lambda: CenterCropPixelSampler)
    precrop_steps: int = 0
    """Steps during which rays are drawn from the image centres only (0 = never)."""
    precrop_fraction: float = 0.5
    """Side of the central crop, as a fraction of the image's."""


class EUGenDataManager(VanillaDataManager[InputDataset]):
    config: EUGenDataManagerConfig

    def __init__(self, config: EUGenDataManagerConfig, *args, **kwargs) -> None:
        check_transforms(config.dataparser, Path(config.data or config.dataparser.data))
        try:
            super().__init__(config, *args, **kwargs)
        except FileNotFoundError as error:
            missing = error.filename or str(error)
            raise InputError(f"{missing}: not found (scene {config.dataparser.data})") from None

    def next_train(self, step: int):
        self.train_pixel_sampler.step = step  # CenterCropPixelSampler's schedule
        return super().next_train(step)

    def create_train_dataset(self) -> InputDataset:
        float32_cameras(self.train_dataparser_outputs)
        check_poses(self.train_dataparser_outputs, "train")
        if self.test_mode != "inference":  # rendering needs cameras only, not images
            check_images(self.train_dataparser_outputs, "train")
        return super().create_train_dataset()

    def create_eval_dataset(self) -> InputDataset:
        outputs = float32_cameras(self.dataparser.get_dataparser_outputs(split=self.test_split))
        check_poses(outputs, self.test_split)
        if self.test_mode != "inference":
            check_images(outputs, self.test_split)
        return self.dataset_type(dataparser_outputs=outputs, scale_factor=self.config.camera_res_scale_factor)


@dataclass
class EUGenDataManagerConfig(VanillaDataManagerConfig):
    """VanillaDataManager settings (nerfstudio's); the scene is checked when the manager is built."""

    _target: type = field(default_factory=lambda: EUGenDataManager)
    pixel_sampler: CenterCropPixelSamplerConfig = field(default_factory=CenterCropPixelSamplerConfig)
    """nerfstudio's pixel sampler plus an optional central crop for the first steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_num_rays_per_batch", "eval_num_rays_per_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"--pipeline.datamanager.{name.replace('_', '-')} must be 1 or more, "
                                 f"got {getattr(self, name)}")
