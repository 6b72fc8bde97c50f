"""The training step's autograd graph gives no whole-grid tensor a per-sample slice or
select, nor an in-place rebase of a view (issue 16 item 3: each such node writes a
zero-filled or cloned gradient of the whole tensor in the backward pass; in the paper config
~20 GiB of a clip's backward, `docs/benchmark.md`). The 3D convolutions run on the GPU's path
(on the CPU ``SlicedConv3d`` slices its input along Z on purpose)."""
import math

import pytest
import torch

from test_detector import build, images, make_clip, make_frame, tiny_cfg
from trackocc.analysis.train_ops import autograd_nodes, native_3d_convolutions

COPYING_VIEWS = ('SliceBackward0', 'SelectBackward0', 'CopySlices')


@pytest.mark.parametrize('batch', [1, 2])
def test_no_whole_grid_slices_selects_or_copy_slices(batch):
    model = build(dict(tiny_cfg(), clip_feature_batch=True)).train()
    grid = tuple(model.occ_size)
    torch.manual_seed(0)
    clips = [make_clip([make_frame(t, seq=b) for t in range(3)]) for b in range(batch)]
    with native_3d_convolutions():
        losses = model.loss(dict(imgs=images(batch, 3)), clips)
    offending = []
    for fn in autograd_nodes(sum(losses.values())):
        name = type(fn).__name__
        if name == 'CopySlices':
            offending.append(name)
        elif name in COPYING_VIEWS:
            sizes = tuple(fn._saved_self_sym_sizes)
            if sizes[-3:] == grid or math.prod(grid) in sizes:
                offending.append((name, sizes))
    assert offending == []
