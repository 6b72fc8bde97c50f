"""Lazy access to the compiled extension ``trackocc._ext`` (built from ``ops/csrc``).

The extension is optional: every op has a pure-PyTorch reference, so a missing build only
matters when a CUDA tensor reaches an op (then :func:`require_cuda_ext` raises a clear error).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

_EXT: Optional[ModuleType] = None
_EXT_ERROR: Optional[BaseException] = None
_LOADED = False


def load_ext() -> Optional[ModuleType]:
    """Import ``trackocc._ext`` once; return it, or None when it is not built."""
    global _EXT, _EXT_ERROR, _LOADED
    if not _LOADED:
        _LOADED = True
        try:
            _EXT = importlib.import_module('trackocc._ext')
        except ImportError as err:  # not built (CPU-only checkout) or broken build
            _EXT, _EXT_ERROR = None, err
    return _EXT


def ext_available() -> bool:
    """Whether the compiled extension imports."""
    return load_ext() is not None


def ext_with_cuda() -> bool:
    """Whether the compiled extension holds CUDA kernels (``-DWITH_CUDA``)."""
    ext = load_ext()
    return bool(ext is not None and ext.with_cuda())


def _why_missing() -> str:
    if _EXT_ERROR is not None:
        return f'importing trackocc._ext failed: {_EXT_ERROR}'
    return 'trackocc._ext was built without CUDA (no -DWITH_CUDA)'


def require_ext(op: str, symbol: str) -> ModuleType:
    """Return the extension, or raise naming ``op`` when it (or ``symbol``) is missing."""
    ext = load_ext()
    if ext is None:
        raise RuntimeError(
            f'{op}: the compiled extension trackocc._ext is not available '
            f'({_why_missing()}). Build it with `python setup.py build_ext --inplace` '
            f'(FORCE_CUDA=1 and TORCH_CUDA_ARCH_LIST for CUDA kernels) or use the '
            f"pure-PyTorch implementation (impl='pytorch').")
    if not hasattr(ext, symbol):
        raise RuntimeError(f'{op}: trackocc._ext has no function {symbol!r}; rebuild it '
                           f'from the current ops/csrc sources.')
    return ext


def require_cuda_ext(op: str, symbol: str) -> ModuleType:
    """Return the extension for a CUDA call, or raise a clear error if it has no CUDA."""
    ext = require_ext(op, symbol)
    if not ext.with_cuda():
        raise RuntimeError(
            f'{op}: got CUDA tensors but trackocc._ext was built without CUDA kernels. '
            f'Rebuild on a CUDA machine with `FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=<arch> '
            f"python setup.py build_ext --inplace`, or pass impl='pytorch' to run the "
            f'(slow) reference on the GPU.')
    return ext
