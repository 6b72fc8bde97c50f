"""``Tensor.index_add`` with repeated indices through the export's symbolic and onnxruntime.

bev_pool sums many frustum points into one voxel and the spatial cross-attention sums the
cameras of a voxel: the exported scatter must accumulate repeated indices, and must do so the
same way on every run. onnxruntime's CPU ScatterND(reduction='add') writes update rows from
several threads without ordering them (lost updates; 9-26 % of the output's magnitude on this
case, different each run), so the symbolic emits ScatterElements instead.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trackocc.deployment.onnx_export import DEFAULT_OPSET, _IndexAddWithDuplicates


class _IndexAdd(torch.nn.Module):

    def forward(self, base, index, source):
        return base.index_add(0, index, source)


@pytest.mark.parametrize('source_shape', [(4, ), (4, 3)])
def test_index_add_with_repeated_indices_sums_them_on_every_run(tmp_path, source_shape):
    rows, updates = 8, 200_000  # ~25 000 updates per row: a race would lose some
    g = torch.Generator().manual_seed(0)
    base = torch.rand(rows, *source_shape, generator=g)
    index = torch.randint(0, rows, (updates, ), generator=g)
    source = torch.rand(updates, *source_shape, generator=g)
    path = str(tmp_path / 'index_add.onnx')
    with _IndexAddWithDuplicates(DEFAULT_OPSET):
        torch.onnx.export(_IndexAdd(), (base, index, source), path, dynamo=False,
                          opset_version=DEFAULT_OPSET, input_names=['base', 'index', 'source'],
                          dynamic_axes={'index': {0: 'k'}, 'source': {0: 'k'}})
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert 'ScatterElements' in ops and 'ScatterND' not in ops, ops
    expected = _IndexAdd()(base.double(), index, source.double()).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 4  # more threads than this machine may have cores
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feeds = dict(base=base.numpy(), index=index.numpy(), source=source.numpy())
    runs = [session.run(None, feeds)[0] for _ in range(3)]
    for out in runs:
        # float32 sums of ~25 000 values in [0, 1): ~1e-5 of the total
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=0)
        np.testing.assert_array_equal(out, runs[0])
