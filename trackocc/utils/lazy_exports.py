"""Package ``__init__`` helper: public names imported from their submodules on first use.

A package that calls :func:`lazy_exports` in its ``__init__`` keeps ``from pkg import Name``
working (PEP 562 module ``__getattr__``) without importing every submodule up front, so a
light part (e.g. the numpy-only OccSTQ core) can be used without pulling in torch/mmdet3d.
"""
import importlib
import sys
from typing import Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    Args:
        package (str): the package's ``__name__``.
        exports (dict[str, str]): public name -> relative module that defines it
            (``{'OccSTQMetric': '.metrics'}``).
    """

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
