"""``frame_grouped_batch_norm``: the T frames of a clip run through a batch norm in training
mode as one batch, each frame normalised with its own statistics (issue 16 item 3). Outputs,
gradients, running statistics and step counts must be those of T calls in frame order; a
synchronised layer on two gloo ranks must pool each frame over the ranks."""
import copy
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trackocc.models.layers.frame_grouped_norm import (frame_groupable,
                                                        frame_grouped_batch_norm,
                                                        frame_grouped_batch_norms)
from trackocc.utils.sync_batch_norm import convert_to_host_sync_free

CASES = {
    # name: (class, per-sample shape, frames, batch per frame, momentum, affine, running)
    '1d_rows': (nn.BatchNorm1d, (4, ), 3, 5, 0.1, True, True),
    '2d_batch1': (nn.BatchNorm2d, (3, 4, 5), 3, 1, 0.1, True, True),
    '2d_batch2': (nn.BatchNorm2d, (3, 4, 5), 3, 2, 0.3, True, True),
    '3d_batch1': (nn.BatchNorm3d, (2, 3, 4, 2), 2, 1, 0.1, True, True),
    '3d_no_affine': (nn.BatchNorm3d, (2, 3, 2, 2), 4, 2, 0.1, False, True),
    '2d_no_running': (nn.BatchNorm2d, (3, 2, 3), 3, 2, 0.1, True, False),
}


def _data(case, frames=None, batch=None):
    _, shape, t, b, *_ = CASES[case]
    t, b = frames or t, batch or b
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((t * b, ) + shape, generator=gen, dtype=torch.float64) * 2 + 0.7
    x[b:2 * b] = x[b:2 * b] * 3 - 2  # frames with unlike statistics
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x, dy


def _bn(case):
    cls, shape, _, _, momentum, affine, running = CASES[case]
    bn = cls(shape[0], momentum=momentum, affine=affine, track_running_stats=running).double()
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 2.0, shape[0]))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, shape[0]))
    if running:
        gen = torch.Generator().manual_seed(1)
        bn.running_mean.uniform_(-1, 1, generator=gen)
        bn.running_var.uniform_(0.5, 2, generator=gen)
    return bn.train()


def _frame_by_frame(bn, x, dy, frames):
    x = x.clone().requires_grad_(True)
    y = torch.cat([bn(part) for part in x.chunk(frames)])
    y.backward(dy)
    return y.detach(), x.grad


def _grouped(bn, x, dy, frames):
    x = x.clone().requires_grad_(True)
    y = frame_grouped_batch_norm(bn, x, frames)
    y.backward(dy)
    return y.detach(), x.grad


def _assert_same_layer(a, b):
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)
    for name in ('weight', 'bias'):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(a, name).grad, getattr(b, name).grad, msg=name)


@pytest.mark.parametrize('case', sorted(CASES))
def test_grouped_equals_the_frames_in_order(case):
    frames = CASES[case][2]
    x, dy = _data(case)
    ref, grouped = _bn(case), _bn(case)
    for step in range(2):  # the running statistics compound
        y_ref, gx_ref = _frame_by_frame(ref, x, dy, frames)
        y, gx = _grouped(grouped, x, dy, frames)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(gx, gx_ref)
    _assert_same_layer(grouped, ref)
    if CASES[case][6]:
        assert int(grouped.num_batches_tracked) == 2 * frames


def test_one_batch_norm_over_all_frames_is_told_apart():
    """The mutation the test guards against: statistics over the whole batch differ."""
    x, dy = _data('2d_batch2')
    ref, whole = _bn('2d_batch2'), _bn('2d_batch2')
    y_ref, _ = _frame_by_frame(ref, x, dy, 3)
    y_whole, _ = _frame_by_frame(whole, x, dy, 1)
    assert not torch.allclose(y_whole, y_ref, atol=1e-3)


def test_uneven_frames_are_refused():
    bn = _bn('2d_batch2')
    with pytest.raises(ValueError, match='not 3 frames'):
        frame_grouped_batch_norm(bn, torch.zeros(4, 3, 2, 2, dtype=torch.float64), 3)


def test_context_installs_and_restores_and_checks():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.BatchNorm2d(3).eval()).double().train()
    net[3].eval()
    x, dy = _data('2d_batch2')
    ref = copy.deepcopy(net)
    with frame_grouped_batch_norms([net], 3):
        assert 'forward' in net[1].__dict__ and 'forward' not in net[3].__dict__
        y = net(x)
    assert 'forward' not in net[1].__dict__
    y_ref = torch.cat([ref(part) for part in x.chunk(3)])
    torch.testing.assert_close(y, y_ref)
    # the running statistics, updated when the block ends, as three calls would
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        torch.testing.assert_close(getattr(net[1], name), getattr(ref[1], name), msg=name)
    assert int(net[1].num_batches_tracked) == 3 and int(net[3].num_batches_tracked) == 0
    cumulative = nn.BatchNorm2d(3, momentum=None)
    assert frame_groupable([net]) and not frame_groupable([cumulative])
    assert not frame_groupable([nn.SyncBatchNorm(3)])
    assert frame_groupable([cumulative.eval()])  # eval mode: it mixes nothing
    with pytest.raises(ValueError, match='cannot be grouped'):
        with frame_grouped_batch_norms([cumulative.train()], 3):
            pass


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _sync_worker(rank, world_size, port, out_dir):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        x, dy = _data('2d_batch2', frames=3, batch=4)
        # frame-major (3 frames x 4 samples); rank r holds samples 2r, 2r+1 of each frame
        rows = torch.arange(12).view(3, 4)[:, 2 * rank:2 * rank + 2].reshape(-1)
        bn = convert_to_host_sync_free(nn.SyncBatchNorm.convert_sync_batchnorm(
            _bn('2d_batch2').float())).train()
        assert frame_groupable([bn])
        y, gx = _grouped(bn, x[rows].float(), dy[rows].float(), 3)
        torch.save(dict(rows=rows, y=y, gx=gx, grad_w=bn.weight.grad, grad_b=bn.bias.grad,
                        running_mean=bn.running_mean, running_var=bn.running_var),
                   osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


def test_synchronised_layer_pools_each_frame_over_the_ranks(tmp_path):
    mp.spawn(_sync_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=False) for r in range(2)]
    x, dy = _data('2d_batch2', frames=3, batch=4)
    ref = _bn('2d_batch2').float()
    y_ref, gx_ref = _frame_by_frame(ref, x.float(), dy.float(), 3)
    tol = dict(rtol=1e-4, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r['y'], y_ref[r['rows']], **tol)
        torch.testing.assert_close(r['gx'], gx_ref[r['rows']], **tol)
        torch.testing.assert_close(r['running_mean'], ref.running_mean, **tol)
        torch.testing.assert_close(r['running_var'], ref.running_var, **tol)
    # each rank's weight / bias gradient is its own share (DDP sums them)
    torch.testing.assert_close(ranks[0]['grad_w'] + ranks[1]['grad_w'], ref.weight.grad, **tol)
    torch.testing.assert_close(ranks[0]['grad_b'] + ranks[1]['grad_b'], ref.bias.grad, **tol)
