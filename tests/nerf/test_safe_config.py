"""A run's config.yml builds config classes only: a payload tag is refused in one line and runs nothing,
under this package's commands and under nerfstudio's own (which read configs through our loader)."""

from __future__ import annotations

import copy

import pytest
import yaml

from eugen_nerf.bench.suite import BenchSuite
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.runs import read_run_config
from eugen_nerf.nerf.engine.safe_config import UnsafeConfigError, load_run_config

PAYLOADS = {  # each creates the file MARKER when yaml.Loader (nerfstudio's own reader) loads it
    "os.system": '!!python/object/apply:os.system ["touch MARKER"]',
    "subprocess.call": '!!python/object/apply:subprocess.call [["touch", "MARKER"]]',
    "builtins.exec": '!!python/object/apply:builtins.exec ["open(r\'MARKER\', \'w\').close()"]',
}


def poisoned_run(tiny_runs, tmp_path, command: str = "os.system") -> tuple:
    """A copy of the tiny EUGen run's config.yml with a payload as an extra top-level key."""
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.yml"
    config.write_text(tiny_runs["eugen"].read_text() + "pwned: " + PAYLOADS[command].replace("MARKER", str(marker))
                      + "\n")
    return config, marker


def test_honest_configs_load_as_before(tiny_runs):
    from nerfstudio.configs.method_configs import method_configs

    for config_path in tiny_runs.values():
        safe = read_run_config(config_path, "--load-config")
        assert yaml.dump(safe) == yaml.dump(yaml.load(config_path.read_text(), Loader=yaml.Loader))
    stock = copy.deepcopy(method_configs["vanilla-nerf"])  # nerfstudio's own method: its classes and enums
    assert yaml.dump(load_run_config(yaml.dump(stock), "vanilla-nerf.yml")) == yaml.dump(stock)


@pytest.mark.parametrize("command", sorted(PAYLOADS))
def test_a_payload_is_refused_in_one_line_and_runs_nothing(tiny_runs, tmp_path, command):
    config, marker = poisoned_run(tiny_runs, tmp_path, command)
    with pytest.raises(UnsafeConfigError) as caught:
        read_run_config(config, "--load-config")
    message = str(caught.value)
    assert "\n" not in message and str(config) in message and f"!!python/object/apply:{command}" in message
    with pytest.raises(UnsafeConfigError):
        BenchSuite(runs=(config.parent,), output_dir=tmp_path / "suite").run()
    assert not marker.exists()
    yaml.load(config.read_text(), Loader=yaml.Loader)  # the control: the payload is real
    assert marker.exists()


@pytest.mark.parametrize("name, why", [
    ("nerfstudio.scripts.completions.install.main", "is not a class"),  # a function that edits shell files
    ("nerfstudio.engine.trainer.Trainer", "get_checkpoint_dir is not a field of EUGenTrainerConfig"),
])
def test_a_config_cannot_replace_a_method(tiny_runs, name, why):
    """get_checkpoint_dir() is called on every loaded run: a key of that name must not shadow the method."""
    text = tiny_runs["eugen"].read_text() + f"get_checkpoint_dir: !!python/name:{name} ''\n"
    with pytest.raises(UnsafeConfigError, match=why):
        load_run_config(text, "config.yml")


def test_only_dataclass_configs_are_built():
    with pytest.raises(UnsafeConfigError, match="not a config dataclass"):
        load_run_config("!!python/object:nerfstudio.engine.trainer.Trainer {}", "x.yml")
    with pytest.raises(UnsafeConfigError, match="refused tag !!python/object/new:os.system"):
        load_run_config("!!python/object/new:os.system [ls]", "x.yml")
    with pytest.raises(UnsafeConfigError, match="refused tag !!python/module:os"):
        load_run_config("!!python/module:os", "x.yml")


@pytest.mark.slow
def test_ns_eval_refuses_a_payload_in_one_line(tiny_runs, tmp_path, ns):
    config, marker = poisoned_run(tiny_runs, tmp_path)
    result = ns("ns-eval", "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"))
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "refused tag !!python/object/apply:os.system" in error
    assert str(config) in error and "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_model_target_edited_to_another_method_is_one_line(tiny_runs, tmp_path):
    from eugen_nerf.nerf.engine.runs import load_pipeline

    original = "_target: !!python/name:eugen_nerf.nerf.methods.nerf.EUGenNeRFModel ''"
    text = tiny_runs["eugen"].read_text()
    assert original in text
    edited = tmp_path / "config.yml"
    edited.write_text(text.replace(original, "_target: !!python/name:nerfstudio.models.nerfacto.NerfactoModel ''"))
    with pytest.raises(InputError, match="pipeline.model._target is nerfstudio.models.nerfacto.NerfactoModel, not "
                                         "EUGenNeRFModel.*was edited"):
        load_pipeline(edited, "--load-config")
