"""Reading a run's config.yml without running code from it.

nerfstudio saves a run's TrainerConfig as YAML with Python tags and reads it back with `yaml.Loader`,
which builds any object the file names: `!!python/object/apply:os.system [...]` in a shared run
folder would run a command under `ns-eval`. `RunConfigLoader` builds only what a config holds:
dataclass configs and referenced classes or functions of nerfstudio and this package (and the torch
optimizers they name), enums, paths and tuples. Every other Python tag is refused in one line.

`protect_nerfstudio_config_loading()` makes nerfstudio's own readers (ns-eval, ns-render, ns-export,
ns-viewer, ns-train --load-config) use it; the method registry calls it, since every ns-* command
imports the registry through the entry points before it reads a config.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pathlib
import sys
from types import SimpleNamespace
from typing import Any

import yaml

from eugen_nerf.errors import InputError

# Modules whose classes and functions a config may name; importing them is what loading a run does anyway.
ALLOWED_MODULES = ("nerfstudio", "eugen_nerf", "torch.optim")
PATH_TYPES = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath)
PYTHON_TAG = "tag:yaml.org,2002:python/"


class UnsafeConfigError(InputError):
    """A config.yml names something that is not a config class (a tag that could run code)."""


def _refuse(tag: str, why: str) -> UnsafeConfigError:
    return UnsafeConfigError(f"refused tag !!{tag.removeprefix('tag:yaml.org,2002:')}: {why}")


def _resolve(name: str, tag: str) -> Any:
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not any(module_name == m or module_name.startswith(m + ".") for m in ALLOWED_MODULES):
        if name not in {f"{t.__module__}.{t.__qualname__}" for t in PATH_TYPES}:
            raise _refuse(tag, f"only nerfstudio's and eugen-nerf's config classes may be built, not {name!r}")
        module_name, attribute = "pathlib", name.rpartition(".")[2]
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        raise _refuse(tag, f"{name!r} does not exist in this installation") from None


class RunConfigLoader(yaml.SafeLoader):
    """YAML loader for a run's config.yml that builds nothing but configs (see the module docstring)."""


def _construct_name(loader: RunConfigLoader, suffix: str, node: yaml.Node) -> Any:
    target = _resolve(suffix, node.tag)
    if not (isinstance(target, type) or callable(target)):
        raise _refuse(node.tag, f"{suffix!r} is not a class or function")
    return target


def _construct_object(loader: RunConfigLoader, suffix: str, node: yaml.Node):
    cls = _resolve(suffix, node.tag)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise _refuse(node.tag, f"{suffix!r} is not a config dataclass")
    instance = cls.__new__(cls)
    yield instance
    state = loader.construct_mapping(node, deep=True)
    if hasattr(instance, "__setstate__"):
        instance.__setstate__(state)
    else:
        instance.__dict__.update(state)


def _construct_apply(loader: RunConfigLoader, suffix: str, node: yaml.Node) -> Any:
    cls = _resolve(suffix, node.tag)
    if not (cls in PATH_TYPES or (isinstance(cls, type) and issubclass(cls, enum.Enum))):
        raise _refuse(node.tag, f"only paths and enum values are built by a call, not {suffix!r}")
    if not isinstance(node, yaml.SequenceNode):
        raise _refuse(node.tag, "expected the short form (a list of arguments)")
    return cls(*loader.construct_sequence(node, deep=True))


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
    """`yaml.load` as nerfstudio calls it on a run's config.yml, with the restricted loader."""
    caller = sys._getframe(1).f_locals  # eval_setup and ns-train name the file `config_path` / `config`
    path = caller.get("config_path") or getattr(caller.get("config"), "load_config", None) or "config.yml"
    return load_run_config(stream, str(path))


def protect_nerfstudio_config_loading() -> None:
    """Point nerfstudio's config readers at `load_run_config` (the modules that are loaded by now)."""
    shim = SimpleNamespace(load=_nerfstudio_load, Loader=RunConfigLoader, dump=yaml.dump)
    for name in ("nerfstudio.utils.eval_utils", "nerfstudio.scripts.train"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "yaml", None) is yaml:
            module.yaml = shim
