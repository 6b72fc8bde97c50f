"""Let torch>=2.6 resume MMEngine checkpoints.

torch 2.6 switched ``torch.load`` to ``weights_only=True``; MMEngine 0.10.7 calls it without the
argument, and its checkpoints hold more than tensors: the message hub (``HistoryBuffer`` objects
with numpy arrays inside), numpy scalars in the runtime info, and dataset metadata. Instead of
turning the safety check off, this module allow-lists exactly those types as torch "safe
globals"; any other pickled class is still refused.

One more thing is in those checkpoints: each ``HistoryBuffer`` pickles its statistics methods as
``getattr(buffer, 'mean')``. Allowing ``builtins.getattr`` itself would open the door to any
attribute chain, so it is mapped to :func:`_history_buffer_getattr`, which only hands out the
public methods of ``HistoryBuffer``.
"""
import collections
import importlib
import pickle

import numpy as np
import torch

# (module, attribute) pairs found in MMEngine 0.10.7 checkpoints
# (torch.serialization.get_unsafe_globals_in_checkpoint on a Runner checkpoint with EMA),
# plus ConfigDict, which ``meta['dataset_meta']`` holds when a dataset's metainfo comes from
# its config.
_SAFE_GLOBALS = [
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('mmengine.config.config', 'ConfigDict'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
]


def _numpy_dtype_classes():
    """``numpy.dtypes.Float64DType`` and friends (how numpy>=1.25 pickles a dtype)."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:
        return []
    return [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` restricted to the public methods of MMEngine's HistoryBuffer."""
    from mmengine.logging import HistoryBuffer
    is_buffer = isinstance(obj, HistoryBuffer) or obj is HistoryBuffer
    if not (is_buffer and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({type(obj).__name__}, {name!r}); trackocc only allows '
            'the statistics methods of mmengine HistoryBuffer')
    return getattr(obj, name)


def checkpoint_safe_globals():
    """The objects trackocc allow-lists for ``torch.load(weights_only=True)``."""
    objs = []
    for module, attr in _SAFE_GLOBALS:
        try:
            objs.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # e.g. numpy 2 renamed numpy.core
            continue
    objs.extend(_numpy_dtype_classes())
    objs.extend([collections.OrderedDict, set, frozenset])  # builtins torch may not list
    objs.append((_history_buffer_getattr, 'builtins.getattr'))
    return objs


def register_checkpoint_safe_globals():
    """Register :func:`checkpoint_safe_globals` with torch (no-op for torch without the API)."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return []
    objs = checkpoint_safe_globals()
    add_safe_globals(objs)
    return objs
