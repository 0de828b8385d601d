"""nerfstudio's data-parallel path (`--machine.num-devices 2`) on two CPU processes (gloo): both processes
end with the same parameters and EUGen projections, one run folder gets one set of checkpoints, which load
in one process (ns-eval) and resume on two; NaN on one process stops both with one line; bad input too."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("distributed_run.py")
TINY = ["--machine.device-type", "cpu", "--machine.num-devices", "2", "--steps-per-save", "1",
        "--experiment-name", "smoke", "--pipeline.datamanager.train-num-rays-per-batch", "4",
        "--pipeline.model.eval-num-rays-per-chunk", "256", "--steps-per-eval-batch", "1000000",
        "--steps-per-eval-image", "1000000", "--steps-per-eval-all-images", "1000000"]
METHOD_FLAGS = {
    "eugen-nerf": ["--pipeline.model.num-coarse-samples", "4", "--pipeline.model.num-importance-samples", "4"],
    "eugen-zipnerf": [
        "--pipeline.model.base-mlp-layer-width", "64", "--pipeline.model.proposal-mlp-layer-width", "32",
        "--pipeline.model.num-proposal-samples-per-ray", "4", "4", "--pipeline.model.num-nerf-samples-per-ray", "4",
        "--pipeline.model.head-mlp-layer-width", "64", "--pipeline.model.bottleneck-width", "64",
        "--pipeline.model.grid-log2-hashmap-size", "10", "--pipeline.model.grid-num-levels", "3",
        "--pipeline.model.grid-max-resolution", "64", "--pipeline.model.proposal-grid-num-levels", "2", "2",
        "--pipeline.model.proposal-grid-max-resolutions", "32", "32",
        "--optimizers.fields.scheduler.warmup-steps", "0", "--optimizers.proposal-networks.scheduler.warmup-steps", "0",
    ],
}


def train_on_two_processes(method: str, data: Path, output: Path, states: Path, *flags: str,
                           fault: tuple[str, int, int] = ("none", -1, -1)) -> subprocess.CompletedProcess:
    states.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(HELPER), str(states), *map(str, fault), method, *TINY,
               "--output-dir", str(output), *METHOD_FLAGS[method], *flags, "blender-data", "--data", str(data)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def assert_same_on_both_ranks(states: Path) -> dict:
    ranks = [torch.load(states / f"rank-{rank}.pt", weights_only=True) for rank in (0, 1)]
    # each process trained on rays of its own, and ended with the same model as the other
    assert not torch.equal(ranks[0]["first_batch_indices"], ranks[1]["first_batch_indices"])
    first, second = ranks[0]["tensors"], ranks[1]["tensors"]
    assert first.keys() == second.keys()
    assert any(name.endswith(".projection") for name in first)  # the EUGen layers' random projections
    differ = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differ, differ
    return first


@pytest.mark.parametrize("method", ["eugen-nerf", "eugen-zipnerf"])
def test_two_cpu_processes_train_one_model_that_loads_and_resumes(method, tiny_blender, tmp_path, ns):
    result = train_on_two_processes(method, tiny_blender, tmp_path / "out", tmp_path / "states",
                                    "--timestamp", "first", "--max-num-iterations", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    final = assert_same_on_both_ranks(tmp_path / "states")

    assert [run.name for run in (tmp_path / "out" / "smoke" / method).iterdir()] == ["first"]
    run = tmp_path / "out" / "smoke" / method / "first"
    checkpoints = sorted((run / "nerfstudio_models").iterdir())
    assert [c.name for c in checkpoints] == ["step-000000002.ckpt"]
    saved = torch.load(checkpoints[0], weights_only=True)["pipeline"]
    assert not any(".module." in key for key in saved)  # the single-process layout
    for name, tensor in final.items():  # what rank 0 saved is what both ranks ended with
        if f"_model.{name}" in saved:
            assert torch.equal(saved[f"_model.{name}"], tensor), name

    evaluated = ns("ns-eval", "--load-config", str(run / "config.yml"), "--output-path", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert math.isfinite(json.loads((tmp_path / "eval.json").read_text())["results"]["psnr"])

    resumed = train_on_two_processes(method, tiny_blender, tmp_path / "out", tmp_path / "resumed-states",
                                     "--timestamp", "resumed", "--max-num-iterations", "5",
                                     "--load-dir", str(run / "nerfstudio_models"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and "(step 2); 2 of 5 steps to go" in resumed.stdout
    after = assert_same_on_both_ranks(tmp_path / "resumed-states")
    assert any(not torch.equal(after[name], final[name]) for name in final)  # the two steps trained
    names = [c.name for c in (tmp_path / "out" / "smoke" / method / "resumed" / "nerfstudio_models").iterdir()]
    assert names == ["step-000000004.ckpt"]


def test_nan_on_one_process_stops_both_with_one_line(tiny_blender, tmp_path):
    result = train_on_two_processes("eugen-nerf", tiny_blender, tmp_path / "out", tmp_path / "states",
                                    "--timestamp", "nan", "--max-num-iterations", "50", fault=("nan", 1, 3))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at step 3: NaN or infinite values reached an EUGen layer "
                           "(in training process 1 of 2)"), last
    assert "step-000000002.ckpt" in last  # rank 0's line: the checkpoint it kept
    checkpoints = [c.name for c in (tmp_path / "out" / "smoke" / "eugen-nerf" / "nan" / "nerfstudio_models").iterdir()]
    assert checkpoints == ["step-000000002.ckpt"]
    assert not (tmp_path / "states" / "rank-0.pt").exists()  # neither process went on training


def test_an_error_of_rank_0_alone_is_its_one_line(tiny_blender, tmp_path):
    """Rank 0 stops alone (as on NaN weights found when it saves); rank 1, waiting for it in the next step's
    gradient all-reduce, fails on the lost connection: the run still ends with rank 0's line."""
    result = train_on_two_processes("eugen-nerf", tiny_blender, tmp_path / "out", tmp_path / "states",
                                    "--timestamp", "error", "--max-num-iterations", "50", fault=("error", 0, 2))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "error: forced failure of this process's save at step 2"
    assert "Traceback" not in result.stderr


def test_ctrl_c_on_two_processes_saves_once_and_ends_with_the_resume_line(tiny_blender, tmp_path):
    """Ctrl-C reaches every process of the terminal's group: rank 0 saves and prints the resume line, the
    launcher waits for it and stops rank 1; exit status 130, no traceback, one checkpoint."""
    command = [str(Path(sys.executable).parent / "ns-train"), "eugen-nerf", *TINY, "--output-dir", str(tmp_path),
               "--timestamp", "ctrl-c", "--max-num-iterations", str(10**6), "--steps-per-save", str(10**6),
               *METHOD_FLAGS["eugen-nerf"], "blender-data", "--data", str(tiny_blender)]
    # its own process group (what a terminal's Ctrl-C signals), with SIGINT's default disposition
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(240, lambda: os.killpg(process.pid, signal.SIGKILL))  # never hang CI
    watchdog.start()
    for line in process.stdout:  # training has started once rank 0 prints the step table
        if "Step (% Done)" in line:
            break
    time.sleep(3)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    watchdog.cancel()
    assert output.strip().splitlines()[-1].startswith("Interrupted: saved step"), output[-2000:]
    assert process.returncode == 130 and "Traceback" not in output, output[-2000:]
    (saved,) = (tmp_path / "smoke" / "eugen-nerf" / "ctrl-c" / "nerfstudio_models").glob("step-*.ckpt")
    assert torch.load(saved, weights_only=True)["step"] > 0


def test_ns_train_on_two_cpu_processes_reports_bad_input_in_one_line(tmp_path, ns):
    result = ns("ns-train", "eugen-nerf", *TINY, "--output-dir", str(tmp_path / "out"), "--max-num-iterations", "3",
                "blender-data", "--data", str(tmp_path / "no-scene"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no-scene" in last, last


def test_bench_scaling_measures_one_and_two_processes(tmp_path, load_busy):
    from eugen_nerf.bench.scaling import BenchScaling
    from eugen_nerf.bench.timing import any_noisy

    results = BenchScaling(twins=("eugen",), steps=12, repeats=1, output=tmp_path / "scaling.json").run()
    rows = {row["processes"]: row for row in results["rows"]}
    assert set(rows) == {1, 2}
    assert all(row["rays_per_second"] > 0 for row in rows.values())
    assert rows[1]["speed_up_over_one_process"] == 1.0
    ratio = rows[2]["rays_per_second"] / rows[1]["rays_per_second"]
    assert rows[2]["speed_up_over_one_process"] == pytest.approx(ratio, abs=2e-3)
    assert json.loads((tmp_path / "scaling.json").read_text())["rows"] == results["rows"]
    for row in rows.values():  # each run's load, the training processes counted as the benchmark's own
        (load,) = row["machine_load"]
        assert load["threads"] == row["processes"]
        assert load_busy(load) == row["noisy"]
    assert results["noisy"] == any_noisy(row["noisy"] for row in rows.values())


def test_step_durations_come_back_from_running_means():
    from eugen_nerf.bench.scaling import step_seconds

    durations = [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.1]
    window = 3
    means = [sum(durations[max(0, s - window + 1):s + 1]) / min(s + 1, window) for s in range(len(durations))]
    assert step_seconds(means, window) == pytest.approx(durations)


@pytest.mark.parametrize("flags, message", [
    ({"steps": 10}, "--steps must be above 10"),
    ({"processes": (0,)}, "--processes must be 1 or more"),
    ({"presets": ("no-such-preset",)}, "no such preset"),
    ({"twins": ()}, "--twins: name at least one"),
])
def test_bench_scaling_refuses_bad_flags(flags, message):
    from eugen_nerf.bench.scaling import BenchScaling
    from eugen_nerf.errors import InputError

    with pytest.raises(InputError, match=message):
        BenchScaling(**flags).run()
