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
from trackocc.analysis.train_ops import backward_nodes
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


def _cuda_grouped_run(bn, x, dy, frames):
    """``frame_grouped_batch_norms`` over ``bn`` on CUDA with the sync debug mode raising on
    any host synchronisation (forward, backward and the running statistics' update)."""
    x = x.clone().requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        with frame_grouped_batch_norms([bn], frames):
            y = bn(x)
        y.backward(dy)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    return y.detach(), x.grad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_grouped_equals_the_frames_in_order_without_host_syncs(dtype):
    """The paper config's case on a GPU: a 3D volume, batch 1 per frame, float32 layer
    parameters, the input in float32 or bfloat16 (as under autocast)."""
    x, dy = _data('3d_batch1', frames=3)
    x, dy = x.float().cuda().to(dtype), dy.float().cuda().to(dtype)
    ref, grouped = _bn('3d_batch1').float().cuda(), _bn('3d_batch1').float().cuda()
    xr = x.clone().requires_grad_(True)
    y_ref = torch.cat([ref(part) for part in xr.chunk(3)])
    y_ref.backward(dy)
    y, gx = _cuda_grouped_run(grouped, x, dy, 3)
    tol = {} if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y.float(), y_ref.detach().float(), **tol)
    torch.testing.assert_close(gx.float(), xr.grad.float(), **tol)
    for name in ('running_mean', 'running_var'):
        torch.testing.assert_close(getattr(grouped, name), getattr(ref, name), **tol, msg=name)
    assert int(grouped.num_batches_tracked) == int(ref.num_batches_tracked) == 3


def _sync_worker_cuda(rank, world_size, port, out_dir):
    """``_sync_worker`` on cuda:rank over NCCL, bfloat16 input, no host synchronisation."""
    torch.cuda.set_device(rank)
    dist.init_process_group('cpu:gloo,cuda:nccl', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    try:
        x, dy = _data('2d_batch2', frames=3, batch=4)
        rows = torch.arange(12).view(3, 4)[:, 2 * rank:2 * rank + 2].reshape(-1)
        bn = convert_to_host_sync_free(nn.SyncBatchNorm.convert_sync_batchnorm(
            _bn('2d_batch2').float())).cuda().train()
        y, gx = _cuda_grouped_run(bn, x[rows].float().cuda().bfloat16(),
                                  dy[rows].float().cuda().bfloat16(), 3)
        torch.save(dict(rows=rows, y=y.float().cpu(), gx=gx.float().cpu(),
                        grad_w=bn.weight.grad.cpu(), grad_b=bn.bias.grad.cpu(),
                        running_mean=bn.running_mean.cpu(),
                        running_var=bn.running_var.cpu()),
                   osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 CUDA devices')
def test_two_gpus_pool_each_frame_over_the_ranks_without_host_syncs(tmp_path):
    """The DDP training path of the paper config (issue 16 item 3): the frame-grouped
    host-sync-free synchronised layer on NCCL, one collective per clip, in bfloat16."""
    mp.spawn(_sync_worker_cuda, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=False) for r in range(2)]
    x, dy = _data('2d_batch2', frames=3, batch=4)
    ref = _bn('2d_batch2').float()
    y_ref, gx_ref = _frame_by_frame(ref, x.float().bfloat16().float(),
                                    dy.float().bfloat16().float(), 3)
    tol = dict(rtol=2e-2, atol=2e-2)
    for r in ranks:
        torch.testing.assert_close(r['y'], y_ref[r['rows']], **tol)
        torch.testing.assert_close(r['gx'], gx_ref[r['rows']], **tol)
        torch.testing.assert_close(r['running_mean'], ref.running_mean, **tol)
        torch.testing.assert_close(r['running_var'], ref.running_var, **tol)
    grad_w, grad_b = ref.weight.grad, ref.bias.grad
    torch.testing.assert_close(ranks[0]['grad_w'] + ranks[1]['grad_w'], grad_w, rtol=0,
                               atol=4 * torch.finfo(torch.bfloat16).eps * float(grad_w.abs().max()))
    torch.testing.assert_close(ranks[0]['grad_b'] + ranks[1]['grad_b'], grad_b, rtol=0,
                               atol=4 * torch.finfo(torch.bfloat16).eps * float(grad_b.abs().max()))


@pytest.mark.parametrize('case', ['3d_batch1', '2d_batch2'])
def test_in_place_activation_after_the_grouped_norm_needs_no_copy_slices(case):
    """A ConvModule's ``ReLU(inplace=True)`` and a residual ``+=`` on the grouped output: the
    same values and gradients as the frames in order, without autograd rebasing a view
    (``CopySlices``: a clone and a copy of the whole gradient per layer)."""
    frames = CASES[case][2]
    x, dy = _data(case)
    ref, grouped = _bn(case), _bn(case)
    results = []
    for run in ('frames', 'grouped'):
        xr = x.clone().requires_grad_(True)
        if run == 'frames':
            y = torch.cat([ref(part) for part in xr.chunk(frames)])
        else:
            y = frame_grouped_batch_norm(grouped, xr, frames)
        y += xr  # a residual block's order: the sum, then the in-place ReLU
        y.relu_()
        y.backward(dy)
        results.append((y.detach(), xr.grad, set(backward_nodes(y))))
    (y_ref, gx_ref, _), (y, gx, nodes) = results
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref)
    assert 'CopySlices' not in nodes and 'NativeBatchNormBackward0' in nodes
    _assert_same_layer(grouped, ref)


class _ConvBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def test_a_compiled_module_is_not_compiled_again_at_each_grouped_call():
    """``torch.compile`` guards a module's layers' ``forward`` by identity: each layer's
    grouped forward is one object kept on the layer, so the block's later calls reuse the
    first compile (a new forward object per call compiled the module again every
    iteration). Outputs, gradients and running statistics stay those of the eager layers."""
    from trackocc.utils.compile_modules import compiled_graphs
    torch.manual_seed(0)
    eager = _ConvBlock().double().train()
    compiled = copy.deepcopy(eager)
    compiled.compile(backend='eager')
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        graphs = []
        for step in range(3):
            x = torch.randn(6, 3, 4, 4, dtype=torch.float64) * (step + 1)
            outs = []
            for model in (eager, compiled):
                xi = x.clone().requires_grad_(True)
                with frame_grouped_batch_norms([model], 3):
                    y = model(xi)
                y.square().sum().backward()
                outs.append((y.detach(), xi.grad))
            graphs.append(compiled_graphs())
            torch.testing.assert_close(outs[1], outs[0])
        assert graphs[0] >= 1 and graphs == [graphs[0]] * 3, graphs
        for key, value in eager.state_dict().items():
            torch.testing.assert_close(compiled.state_dict()[key], value, msg=key)
        assert int(compiled.bn1.num_batches_tracked) == 9  # 3 frames a call
        assert 'forward' not in compiled.bn1.__dict__  # the layer's own forward is back
    finally:
        torch._dynamo.reset()
