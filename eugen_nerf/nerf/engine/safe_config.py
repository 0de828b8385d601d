"""Reading a run's config.yml without running code from it.

nerfstudio saves a run's TrainerConfig as YAML with Python tags and reads it back with `yaml.Loader`,
which builds any object the file names: `!!python/object/apply:os.system [...]` in a shared run
folder would run a command under `ns-eval`. `RunConfigLoader` builds only what a config holds:
dataclass configs (whose keys may not replace a method), the classes they
name from nerfstudio, this package, the other installed nerfstudio plugins and torch's optimizers,
nerfstudio's collate function, enums, paths and tuples. Every other Python tag is refused in one line.

`protect_nerfstudio_config_loading()` makes nerfstudio's own readers (ns-eval, ns-render, ns-export,
ns-viewer, ns-train --load-config) use it; the method registry calls it, since every ns-* command
imports the registry through the entry points before it reads a config.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.metadata
import os
import pathlib
import sys
from functools import cache
from types import SimpleNamespace
from typing import Any

import yaml

from eugen_nerf.errors import InputError

# Packages whose classes a config may name; importing them is what loading a run does anyway.
BASE_PACKAGES = ("nerfstudio", "eugen_nerf", "torch.optim")
# The only functions a config names (a data manager's collate function); every other name must be a class.
ALLOWED_FUNCTIONS = frozenset({"nerfstudio.data.utils.nerfstudio_collate.nerfstudio_collate"})
PATH_TYPES = {f"pathlib.{t.__name__}": t for t in (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath,
                                                   pathlib.PurePosixPath, pathlib.PureWindowsPath)}
PYTHON_TAG = "tag:yaml.org,2002:python/"


@cache
def allowed_packages() -> tuple[str, ...]:
    """nerfstudio, this package, torch's optimizers, and the packages of every registered nerfstudio plugin
    (their runs' configs name their own classes)."""
    plugins = [entry.module for group in ("nerfstudio.method_configs", "nerfstudio.dataparser_configs")
               for entry in importlib.metadata.entry_points(group=group)]
    for variable in ("NERFSTUDIO_METHOD_CONFIGS", "NERFSTUDIO_DATAPARSER_CONFIGS"):
        plugins += [item.split("=", 1)[-1].split(":")[0] for item in os.environ.get(variable, "").split(",") if item]
    return (*BASE_PACKAGES, *sorted({module.split(".")[0] for module in plugins if module}))


class UnsafeConfigError(InputError):
    """A config.yml names something that is not a config class (a tag that could run code)."""


def _refuse(tag: str, why: str) -> UnsafeConfigError:
    return UnsafeConfigError(f"refused tag !!{tag.removeprefix('tag:yaml.org,2002:')}: {why}")


def _resolve(name: str, tag: str) -> Any:
    if name in PATH_TYPES:
        return PATH_TYPES[name]
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not any(module_name == p or module_name.startswith(p + ".") for p in allowed_packages()):
        raise _refuse(tag, f"only the config classes of nerfstudio and its plugins may be built, not {name!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except Exception:  # noqa: BLE001 - a module that is missing or fails to import: the same refusal
        raise _refuse(tag, f"{name!r} cannot be imported in this installation") from None


class RunConfigLoader(yaml.SafeLoader):
    """YAML loader for a run's config.yml that builds nothing but configs (see the module docstring)."""


def _construct_name(loader: RunConfigLoader, suffix: str, node: yaml.Node) -> Any:
    target = _resolve(suffix, node.tag)
    if not (isinstance(target, type) or suffix in ALLOWED_FUNCTIONS):
        raise _refuse(node.tag, f"{suffix!r} is not a class (a config names classes, which its setup builds)")
    return target


def _construct_object(loader: RunConfigLoader, suffix: str, node: yaml.Node):
    cls = _resolve(suffix, node.tag)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise _refuse(node.tag, f"{suffix!r} is not a config dataclass")
    instance = cls.__new__(cls)
    yield instance
    state = loader.construct_mapping(node, deep=True)
    fields = {f.name for f in dataclasses.fields(cls)}
    # A key that is not a field must not replace a method (e.g. get_checkpoint_dir, called on every loaded
    # run) or a dunder; other extra keys are plain data an older version or a script left there.
    shadowing = sorted(str(key) for key in state if key not in fields and (hasattr(cls, str(key))
                                                                           or str(key).startswith("__")))
    if shadowing:
        verb = "is not a field" if len(shadowing) == 1 else "are not fields"
        raise _refuse(node.tag, f"{', '.join(shadowing)} {verb} of {cls.__name__} (a key may not replace its methods)")
    if hasattr(instance, "__setstate__"):
        instance.__setstate__(state)
    else:
        instance.__dict__.update(state)


def _construct_apply(loader: RunConfigLoader, suffix: str, node: yaml.Node) -> Any:
    cls = _resolve(suffix, node.tag)
    if not (cls in PATH_TYPES.values() or (isinstance(cls, type) and issubclass(cls, enum.Enum))):
        raise _refuse(node.tag, f"only paths and enum values are built by a call, not {suffix!r}")
    if not isinstance(node, yaml.SequenceNode):
        raise _refuse(node.tag, "expected the short form (a list of arguments)")
    arguments = loader.construct_sequence(node, deep=True)
    try:
        return cls(*arguments)
    except (TypeError, ValueError) as error:
        raise _refuse(node.tag, f"{arguments!r} is not a value of {cls.__name__} ({error})") from None


def _construct_refused(loader: RunConfigLoader, suffix: str, node: yaml.Node) -> Any:
    raise _refuse(node.tag, "it is not one of the tags a config.yml holds")


RunConfigLoader.add_constructor(PYTHON_TAG + "tuple", lambda loader, node: tuple(loader.construct_sequence(node)))
RunConfigLoader.add_multi_constructor(PYTHON_TAG + "name:", _construct_name)
RunConfigLoader.add_multi_constructor(PYTHON_TAG + "object:", _construct_object)
RunConfigLoader.add_multi_constructor(PYTHON_TAG + "object/apply:", _construct_apply)
RunConfigLoader.add_multi_constructor(PYTHON_TAG, _construct_refused)  # object/new, module, ...


def load_run_config(text: str, source: str) -> Any:
    """The object a config.yml holds; a refused tag or broken YAML is one line naming `source`."""
    try:
        return yaml.load(text, Loader=RunConfigLoader)
    except UnsafeConfigError as error:
        raise UnsafeConfigError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"{source}: not a readable config.yml ({first_line})") from None


def _nerfstudio_load(stream: str, Loader: Any = None) -> Any:  # yaml.load's signature
    """`yaml.load` as nerfstudio calls it on a run's config.yml, with the restricted loader. Called from
    eval_setup (ns-eval, ns-render, ns-export, ns-viewer), it also checks what eval_setup would only
    assert or index into: that the file holds a run's config and the run has its checkpoint."""
    frame = sys._getframe(1)
    caller = frame.f_locals  # eval_setup and ns-train name the file `config_path` / `config`
    path = caller.get("config_path") or getattr(caller.get("config"), "load_config", None) or "config.yml"
    config = load_run_config(stream, str(path))
    if frame.f_code.co_name == "eval_setup":
        check_run_is_loadable(config, path)
    return config


def require_run_config(config: Any, source: str) -> None:
    """A file read as a config.yml holds a run's TrainerConfig (nerfstudio's readers would stop on a bare
    assert); one line naming `source` otherwise."""
    from nerfstudio.engine.trainer import TrainerConfig

    if not isinstance(config, TrainerConfig):
        raise InputError(f"{source}: not a run's config.yml (it holds {type(config).__name__})")


def check_run_is_loadable(config: Any, path: object) -> None:
    """One line naming `path` for what nerfstudio's eval_setup would stop on with an AssertionError or
    IndexError: a file that is not a run's config, or a run without the checkpoint it asks for."""
    from eugen_nerf.nerf.engine.checkpoints import checkpoint_path, latest_checkpoint

    require_run_config(config, str(path))
    folder = config.get_checkpoint_dir()
    try:
        if config.load_step is None:
            latest_checkpoint(folder)
        elif not checkpoint_path(folder, config.load_step).is_file():
            raise InputError(f"{folder}: no checkpoint of step {config.load_step}")
    except InputError as error:
        raise InputError(f"{path}: the run has no checkpoint to load ({error})") from None


def protect_nerfstudio_config_loading() -> None:
    """Point nerfstudio's config readers at `load_run_config` (the modules that are loaded by now)."""
    shim = SimpleNamespace(load=_nerfstudio_load, Loader=RunConfigLoader, dump=yaml.dump)
    for name in ("nerfstudio.utils.eval_utils", "nerfstudio.scripts.train"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "yaml", None) is yaml:
            module.yaml = shim
