"""Bytes that each aten op reads and writes in a region, by op kind and by module.

A device-free proxy of memory traffic: on the GPU the fast path is bound by its elementwise,
cast and copy kernels (docs/benchmark.md, "Where the fast frame goes"), whose time is their
bytes over the bandwidth. :class:`TrafficRecorder` sees every op below autograd and autocast
(a ``TorchDispatchMode``), so the casts autocast inserts are counted too, and works the same on
the CPU. Counted at the tensor level: an input contributes its elements times their size (at
most its storage, so a broadcast input counts once), an output its elements; views and
allocations count nothing. A kernel may touch less (fused by a compiler, cached) or more
(strided access). Within ``references_as_kernels``
(:mod:`trackocc.analysis.kernel_references`) a custom op's PyTorch reference counts as the one
kernel a GPU runs (kind ``kernel``).
"""
import os.path as osp
import re
import sys
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from torch.nn.modules.module import (register_module_forward_hook,
                                     register_module_forward_pre_hook)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

KINDS = ('cast', 'copy', 'elementwise', 'gather_scatter', 'normalise_reduce', 'matmul_conv',
         'kernel', 'other', 'view', 'alloc')
# ops that neither read nor write elements: aliases the schema does not mark as views, and
# allocations without a fill
_ALIAS = {'_unsafe_view', 'alias', 'detach', 'lift_fresh', 'set_'}
_ALLOC = {'empty', 'empty_like', 'new_empty', 'empty_strided', 'new_empty_strided',
          'resize_'}
_COPY = {'copy_', 'clone', '_to_copy', 'cat', 'stack', 'constant_pad_nd', 'repeat',
         'expand_copy', 'permute_copy', 'new_zeros', 'zeros_like', 'fill_', 'zero_',
         'full_like', 'ones_like', 'flip', 'roll', 'zeros', 'ones', 'full', 'arange'}
_GATHER = {'index', 'index_select', 'gather', 'scatter', 'scatter_', 'scatter_add',
           'scatter_add_', 'index_put', 'index_put_', 'index_add', 'index_add_', 'masked_fill',
           'masked_fill_', 'masked_select', 'masked_scatter', 'nonzero', 'embedding', 'take',
           'grid_sampler_2d', 'grid_sampler_3d', 'upsample_nearest2d', 'upsample_trilinear3d',
           'upsample_bilinear2d', 'upsample_nearest3d', 'sort', 'argsort', 'topk', 'unique'}
_NORM = {'sum', 'mean', 'amax', 'amin', 'max', 'min', 'argmax', 'argmin', 'any', 'all',
         'prod', 'var', 'var_mean', 'std', 'logsumexp', 'cumsum', '_softmax', '_log_softmax',
         'softmax', 'native_batch_norm', '_native_batch_norm_legit_no_training',
         '_native_batch_norm_legit', 'native_layer_norm', 'native_group_norm', 'norm',
         'linalg_vector_norm', 'count_nonzero', 'bincount', 'histc'}
_MATMUL = {'mm', 'bmm', 'addmm', 'baddbmm', 'addbmm', 'matmul', 'convolution',
           '_convolution', 'cudnn_convolution', 'convolution_overrideable', 'linear',
           'mkldnn_convolution', '_scaled_dot_product_flash_attention',
           '_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention',
           '_scaled_dot_product_flash_attention_for_cpu', 'einsum', 'tensordot',
           'convolution_transpose', 'slow_conv3d_forward', 'slow_conv_transpose3d'}


def op_kind(func, args, out) -> str:
    """The kind of an aten overload: ``view`` (aliases its input), ``alloc`` (allocates
    without writing), ``cast`` (a copy that changes the dtype), ``copy``, ``gather_scatter``,
    ``normalise_reduce``, ``matmul_conv``, ``elementwise`` (torch's ``pointwise`` tag) or
    ``other``."""
    name = func.overloadpacket.__name__
    if func.is_view or name in _ALIAS:
        return 'view'
    if name in _ALLOC:
        return 'alloc'
    if name in ('_to_copy', 'copy_'):
        src = args[1] if name == 'copy_' else args[0]
        dst = args[0] if name == 'copy_' else out
        if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and \
                src.dtype != dst.dtype:
            return 'cast'
        return 'copy'
    if name in _COPY:
        return 'copy'
    if name in _GATHER:
        return 'gather_scatter'
    if name in _NORM:
        return 'normalise_reduce'
    if name in _MATMUL:
        return 'matmul_conv'
    if torch.Tag.pointwise in func.tags:
        return 'elementwise'
    return 'other'


def tensor_bytes(t: torch.Tensor) -> int:
    """Elements times element size, at most the bytes of the storage behind ``t``."""
    logical = t.numel() * t.element_size()
    try:
        return min(logical, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
        return logical


def _tensors(tree) -> List[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


class TrafficRecorder(TorchDispatchMode):
    """Count calls and bytes read / written per op kind, per op and per module.

    Args:
        model (nn.Module, optional): modules of ``model`` up to ``depth`` levels below it are
            the owners ops are charged to (the innermost running one; ``'-'`` outside all).
        depth (int): levels of module names (``occ_encoder.upsampler`` is depth 2).
        lines (bool): also charge each op to the innermost source line of the ``trackocc``
            package that called it (``top_lines`` of the summary; slower).

    Use as a context manager around the region; then :meth:`summary`.
    """

    def __init__(self, model: Optional[torch.nn.Module] = None, depth: int = 1,
                 lines: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f'TrafficRecorder: depth must be >= 1, got {depth}')
        self._names = {}
        if model is not None:
            for name, module in model.named_modules():
                if name and name.count('.') < depth:
                    self._names[id(module)] = name
        self.lines = lines
        self._stack: List[str] = []
        self._hooks = []

        def table():  # key -> [calls, bytes read, bytes written]
            return defaultdict(lambda: [0, 0, 0])

        self.by_kind: Dict[str, List[int]] = table()  # kind
        self.by_op: Dict[tuple, List[int]] = table()  # (kind, op)
        self.by_site: Dict[tuple, List[int]] = table()  # (module, kind, op)
        self.by_line: Dict[tuple, List[int]] = table()  # (source line, kind, op)
        self.by_module: Dict[str, Dict[str, List[int]]] = defaultdict(table)  # module, kind

    # -- module attribution --------------------------------------------------------------
    def _pre(self, module, args):
        name = self._names.get(id(module))
        if name is not None:
            self._stack.append(name)

    def _post(self, module, args, out):
        name = self._names.get(id(module))
        if name is not None and self._stack and self._stack[-1] == name:
            self._stack.pop()

    def __enter__(self):
        if self._names:
            self._hooks = [register_module_forward_pre_hook(self._pre),
                           register_module_forward_hook(self._post)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._stack = []
        return super().__exit__(*exc)

    # -- ops -----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        kind = op_kind(func, args, out)
        if kind in ('view', 'alloc'):
            read = written = 0
        else:
            read = sum(tensor_bytes(t) for t in _tensors((args, kwargs)))
            written = sum(tensor_bytes(t) for t in _tensors(out))
        self._charge(kind, func.overloadpacket.__name__, read, written)
        return out

    def record_kernel(self, name: str, inputs, output) -> None:
        """One call of a custom op's kernel (``references_as_kernels``): kind ``kernel``,
        its tensor inputs read once, its output written once."""
        self._charge('kernel', name, sum(tensor_bytes(t) for t in _tensors(inputs)),
                     sum(tensor_bytes(t) for t in _tensors(output)))

    def _charge(self, kind: str, name: str, read: int, written: int) -> None:
        owner = self._stack[-1] if self._stack else '-'
        rows = [self.by_kind[kind], self.by_module[owner][kind], self.by_op[(kind, name)],
                self.by_site[(owner, kind, name)]]
        if self.lines:
            rows.append(self.by_line[(_caller_line(), kind, name)])
        for row in rows:
            row[0] += 1
            row[1] += read
            row[2] += written

    def summary(self, top: int = 20) -> dict:
        """``total`` / ``by_kind`` / ``by_module`` (per kind and total) / ``top_ops`` and
        ``top_sites`` (an op in one module; both the ``top`` most bytes moved): each
        ``calls``, ``read_mib``, ``written_mib``, ``moved_mib``."""
        def entry(calls, read, written):
            return dict(calls=calls, read_mib=read / 2**20, written_mib=written / 2**20,
                        moved_mib=(read + written) / 2**20)

        def most(table):
            return sorted(table.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))[:top]

        by_module = {}
        for owner, kinds in self.by_module.items():
            total = [sum(v[i] for v in kinds.values()) for i in range(3)]
            by_module[owner] = dict(total=entry(*total),
                                    kinds={k: entry(*kinds[k]) for k in KINDS if k in kinds})
        total = [sum(v[i] for v in self.by_kind.values()) for i in range(3)]
        result = dict(
            total=entry(*total),
            by_kind={k: entry(*self.by_kind[k]) for k in KINDS if k in self.by_kind},
            by_module=dict(sorted(by_module.items(),
                                  key=lambda kv: -kv[1]['total']['moved_mib'])),
            top_ops=[dict(kind=k, op=n, **entry(*v)) for (k, n), v in most(self.by_op)],
            top_sites=[dict(module=m, kind=k, op=n, **entry(*v))
                       for (m, k, n), v in most(self.by_site)])
        if self.lines:
            result['top_lines'] = [dict(line=line, kind=k, op=n, **entry(*v))
                                   for (line, k, n), v in most(self.by_line)]
        return result


_PACKAGE = osp.dirname(osp.dirname(osp.abspath(__file__)))  # .../trackocc
_ANALYSIS = osp.dirname(osp.abspath(__file__)) + osp.sep  # .../trackocc/analysis/


def _caller_line() -> str:
    """``path/in/trackocc.py:LINE`` of the innermost trackocc frame on the stack (not in
    ``trackocc/analysis``, the recorders and their helpers); in the backward pass, where the
    stack is the autograd engine's, that of the forward call which made the running node
    (:func:`_node_line`); else ``'-'``."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if _is_model_code(path):
            return f'{osp.relpath(path, osp.dirname(_PACKAGE))}:{frame.f_lineno}'
        frame = frame.f_back
    return _node_line()


def _is_model_code(path: str) -> bool:
    return path.startswith(_PACKAGE) and not path.startswith(_ANALYSIS)


_TRACEBACK_FILE = re.compile(r'File "([^"]+)", line (\d+)')


def _node_line() -> str:
    """``path:LINE (Node)``: the innermost trackocc line of the forward call that made the
    autograd node now running, as anomaly mode records it
    (``torch.autograd.set_detect_anomaly``: :func:`~trackocc.analysis.train_ops.
    training_traffic` with ``lines``); ``'-'`` outside a backward pass or without it."""
    node = torch._C._current_autograd_node()
    if node is None:
        return '-'
    trace = node.metadata.get('traceback_', '')
    trace = ''.join(trace) if isinstance(trace, list) else str(trace)
    for path, line in reversed(_TRACEBACK_FILE.findall(trace)):
        if _is_model_code(path):
            return f'{osp.relpath(path, osp.dirname(_PACKAGE))}:{line} ({type(node).__name__})'
    return f'- ({type(node).__name__})'


@contextmanager
def record_traffic(model=None, depth: int = 1, lines: bool = False) -> Iterator[TrafficRecorder]:
    """``with record_traffic(model, depth=2) as rec: ...``; then ``rec.summary()``."""
    rec = TrafficRecorder(model, depth, lines)
    with rec:
        yield rec
