"""A compiled module's source file, loaded as plain Python: what runs without a compiler."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def as_plain_python(module: ModuleType) -> ModuleType:
    """``module``'s ``.py`` file executed as Python, under a name of its own."""
    assert module.__file__ is not None
    name = module.__name__.rpartition(".")[2]
    path = Path(module.__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_as_python", path)
    assert spec is not None
    assert spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    return plain
