"""tools/analysis_tools/train_ops.py on the CPU (tiny config, random weights): the ops and
backward nodes of one training forward pass as a GPU launches them."""
import json
import os.path as osp

import pytest
import torch

from repo_files import load_module
from trackocc.analysis.train_ops import OpCount, backward_nodes, native_3d_convolutions
from trackocc.models.layers.sliced_conv3d import SlicedConv3d

ROOT = osp.join(osp.dirname(__file__), '..', '..')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def tool():
    return load_module('tools/analysis_tools/train_ops.py', 'train_ops_tool')


def test_feature_batch_takes_fewer_ops_than_frame_by_frame(tool, tmp_path):
    out = tmp_path / 'ops.json'
    batched = tool.main([TINY, '--json', str(out), '--top', '5'])
    frames = tool.main([TINY, '--clip-feature-batch', 'off', '--lines'])
    assert json.loads(out.read_text()) == batched
    assert batched['clip_feature_batch'] is True and frames['clip_feature_batch'] is False
    assert batched['forward_ops'] < 0.9 * frames['forward_ops']
    assert batched['backward_nodes'] < 0.9 * frames['backward_nodes']
    assert batched['parse_losses_ops'] == frames['parse_losses_ops'] == 2
    assert batched['accumulate_grad'] == frames['accumulate_grad'] > 100
    assert len(batched['by_file']) == 5
    assert 'trackocc/models/layers/frame_grouped_norm.py' in \
        tool.main([TINY])['by_file']
    assert any(':' in key for key in frames['by_file'])  # by line


def test_counters_and_native_convolutions():
    own_forward = SlicedConv3d.forward
    conv = SlicedConv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 5, 3, requires_grad=True)
    with OpCount() as sliced:
        conv(x)
    with native_3d_convolutions(), OpCount() as native:
        y = conv(x)
    assert native.ops < sliced.ops  # one convolution, not one per Z tap
    assert SlicedConv3d.forward is own_forward  # restored
    nodes = backward_nodes(y.sum())
    assert nodes['AccumulateGrad'] == 3  # weight, bias, input
    with OpCount() as views:
        x.view(2, -1)
    assert views.views == 1 and views.ops == 0


def test_bad_clip_length_is_refused(tool):
    with pytest.raises(SystemExit):
        tool.parse_args([TINY, '--clip-frames', '0'])


def test_custom_ops_count_as_one_kernel_a_call(tool):
    """bev_pool_v2 and the 2D / 3D deformable attention are one kernel a call on a GPU; on the
    CPU their references are tens of ops (counted with --reference-ops)."""
    kernels = tool.main([TINY, '--traffic', '--lines', '--top', '3'])
    references = tool.main([TINY, '--reference-ops', '--top', '3'])
    calls = kernels['kernel_calls']
    assert set(calls) == {'bev_pool_v2', 'msda_2d', 'msda_3d'} and min(calls.values()) >= 1
    assert references['kernel_calls'] == {} and references['custom_ops'] == 'reference ops'
    # each call replaces its reference's ops (tiny config: 2 389 -> 2 289 forward ops)
    assert kernels['forward_ops'] <= references['forward_ops'] - 5 * sum(calls.values())
    assert kernels['backward_nodes'] < references['backward_nodes']
    assert kernels['accumulate_grad'] == references['accumulate_grad']
    traffic = kernels['traffic']
    assert traffic['by_kind']['kernel']['calls'] == sum(calls.values())
    assert traffic['total']['moved_mib'] > traffic['by_kind']['kernel']['moved_mib'] > 0
    # the backward: each kernel's gradient as one call, and the engine's own ops
    backward = kernels['traffic_backward']
    assert 'convolution_backward' in {row['op'] for row in backward['top_ops']}
    # --lines: the backward's bytes by the forward line that made each node (anomaly mode)
    assert len(backward['top_lines']) == 3
    assert all(row['line'].startswith('trackocc/') and row['line'].endswith('Backward0)')
               for row in backward['top_lines'])
    assert backward['by_kind']['kernel']['calls'] == sum(calls.values())
    assert backward['total']['moved_mib'] > traffic['total']['moved_mib'] / 2
    assert 'traffic' not in references and 'traffic_backward' not in references
