"""Export :class:`TrackOccFrameNetwork` to ONNX (TorchScript-based ``torch.onnx.export``).

The custom ops are exported through their pure-PyTorch references (the CPU default of
``trackocc.ops``): bev_pool_v2 becomes gathers and a scatter-add, the 3D multi-scale deformable
attention becomes 5-D ``GridSample`` (ONNX opset 20; opset 16-19 only have the 2-D form),
mmcv's 2-D deformable attention becomes 4-D ``GridSample``.

``Tensor.index_add`` (bev_pool's voxel sum and the spatial cross-attention's camera sum) sums
duplicate indices; torch's own ONNX symbolic for it does not (it warns and emits a plain
ScatterND). :func:`export_frame_network` therefore registers, for the duration of the export,
a symbolic that emits ``ScatterElements(reduction='add')``, which accumulates duplicates (and
which onnxruntime's CPU kernel applies in order; its ScatterND-add races on duplicates).
"""
import os
import os.path as osp
import shutil
import tempfile
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from trackocc.engine.checkpoint_files import atomic_write
from .frame_network import (DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES, FrameGeometry,
                            TrackOccFrameNetwork, network_inputs)

#: ONNX opset of the export: 20 is the first with N-D (here 5-D) GridSample.
DEFAULT_OPSET = 20
MIN_OPSET = 20


def _index_add_symbolic(g, self, dim, index, source, alpha=None):
    """aten::index_add -> ScatterElements(axis=0, reduction='add') over ``index`` broadcast to
    ``source``'s shape: duplicate indices accumulate, in index order.

    Not ScatterND(reduction='add'): onnxruntime's CPU kernel of it writes the update rows from
    several threads without ordering them, so duplicate indices race (lost updates, a
    different result run to run; measured 9-26 % of the output's magnitude on 200 000 updates
    into 8 rows). Its ScatterElements kernel applies the updates one after another."""
    from torch.onnx import symbolic_helper
    if alpha is not None and not symbolic_helper._is_none(alpha) and \
            symbolic_helper._maybe_get_const(alpha, 'f') != 1:
        return symbolic_helper._unimplemented('index_add', 'alpha != 1', self)
    dim = symbolic_helper._maybe_get_const(dim, 'i')
    if dim != 0:
        return symbolic_helper._unimplemented('index_add', f'dim {dim} != 0', self)
    rank = symbolic_helper._get_tensor_rank(source)
    if rank is None:
        return symbolic_helper._unimplemented('index_add', 'source of unknown rank', self)
    index = symbolic_helper._unsqueeze_helper(g, index, list(range(1, rank)))  # (K, 1, ...)
    index = g.op('Expand', index, g.op('Shape', source))  # source's shape
    return g.op('ScatterElements', self, index, source, axis_i=0, reduction_s='add')


class _IndexAddWithDuplicates:
    """Context: the :func:`_index_add_symbolic` override for opset ``opset``."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def __enter__(self):
        torch.onnx.register_custom_op_symbolic('aten::index_add', _index_add_symbolic,
                                               self.opset)
        return self

    def __exit__(self, *exc):
        torch.onnx.unregister_custom_op_symbolic('aten::index_add', self.opset)
        return False


def export_frame_network(model: nn.Module, geometry: FrameGeometry, imgs: torch.Tensor,
                         out_file: str, num_queries: Optional[int] = None,
                         opset: int = DEFAULT_OPSET, check: bool = True) -> str:
    """Write the per-frame network of ``model`` to ``out_file`` (atomically).

    Args:
        model (TrackOcc): detector (put in eval mode here); export runs on CPU.
        geometry (FrameGeometry): rig tables of an example frame
            (:func:`~trackocc.deployment.frame_network.frame_geometry`).
        imgs (Tensor): (N, 3, H, W) normalized images of that frame.
        out_file (str): path of the ``.onnx`` file.
        num_queries (int, optional): thing queries of the example input (default: the
            model's fresh queries); the exported graph takes any number.
        opset (int): ONNX opset, >= 20 (5-D GridSample).
        check (bool): run ``onnx.checker`` on the written model.

    Returns:
        ``out_file``.
    """
    if opset < MIN_OPSET:
        raise ValueError(f'export_frame_network: opset {opset} < {MIN_OPSET}: the 3D '
                         'deformable attention needs 5-D GridSample (ONNX opset 20)')
    if imgs.dim() != 4:
        raise ValueError(f'export_frame_network: imgs must be (N, 3, H, W), got '
                         f'{tuple(imgs.shape)}')
    model = model.cpu().eval()
    network = TrackOccFrameNetwork(model).eval()
    with torch.no_grad():
        tracks = model._empty_tracks()
        query, ref_pts = tracks.query, tracks.ref_pts.sigmoid()
        if num_queries is not None:
            if num_queries < 1:
                raise ValueError(f'export_frame_network: num_queries must be >= 1, got '
                                 f'{num_queries}')
            reps = -(-num_queries // len(query))
            query = query.repeat(reps, 1)[:num_queries]
            ref_pts = ref_pts.repeat(reps, 1)[:num_queries]
        args = network_inputs(geometry, imgs.float().cpu(), query, ref_pts)
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.onnx-export-') as work:
        tmp = osp.join(work, 'model.onnx')
        with _IndexAddWithDuplicates(opset), warnings.catch_warnings():
            # tracing turns shape checks and the fixed levels / sizes into constants
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            torch.onnx.export(network, args, tmp, dynamo=False, opset_version=opset,
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
        if check:
            import onnx
            onnx.checker.check_model(tmp)
        with open(tmp, 'rb') as src:  # fsynced and renamed into place
            atomic_write(out_file, lambda dst: shutil.copyfileobj(src, dst))
    return out_file


def onnx_session(onnx_file: str, num_threads: Optional[int] = None,
                 providers: Sequence[str] = ('CPUExecutionProvider', )):
    """An onnxruntime ``InferenceSession`` of an exported network."""
    import onnxruntime as ort
    if not osp.isfile(onnx_file):
        raise FileNotFoundError(f'onnx_session: no ONNX model at {onnx_file}')
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    return ort.InferenceSession(onnx_file, sess_options=options, providers=list(providers))
