"""A checkpoint that is not one this package wrote (corrupt, or holding code) is refused by torch's safe
loader, and the refusal is one line naming the file, in eugen commands and in nerfstudio's own."""

from __future__ import annotations

import os

import pytest
import torch

from eugen_nerf.cli import main


class Payload:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def run_with_checkpoint(tiny_blender, tmp_path, reduced_config, train):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    train(config)
    (checkpoint,) = config.get_checkpoint_dir().glob("step-*.ckpt")
    return config.get_base_dir() / "config.yml", checkpoint


@pytest.mark.parametrize("kind", ["corrupt", "payload"])
def test_eugen_bench_nerf_refuses_a_foreign_checkpoint_in_one_line(run_with_checkpoint, tmp_path, capsys, kind):
    config, checkpoint = run_with_checkpoint
    marker = tmp_path / "PWNED"
    if kind == "corrupt":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        torch.save({"pipeline": Payload(marker)}, checkpoint)
    assert main(["bench", "nerf", "--load-config", str(config), "--points", "64", "--repeats", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error:") and f"{checkpoint}: not a checkpoint this package wrote" in error
    assert not marker.exists()


@pytest.mark.slow
def test_ns_eval_refuses_a_payload_checkpoint_in_one_line(run_with_checkpoint, tmp_path, ns):
    config, checkpoint = run_with_checkpoint
    marker = tmp_path / "PWNED"
    torch.save({"pipeline": Payload(marker)}, checkpoint)
    result = ns("ns-eval", "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"))
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert f"{checkpoint}: not a checkpoint this package wrote" in error and "Traceback" not in result.stderr
    assert not marker.exists()
