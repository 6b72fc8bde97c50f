"""Benchmark trackocc's custom ops (CUDA kernels vs PyTorch references) at the paper's sizes.

    python tools/analysis_tools/benchmark_ops.py [--ops bev_pool msda3d mmcv refiner merge]
        [--iters 20] [--out bench.md]

Sizes (paper model, batch 1): bev_pool_v2 with 5 cameras, 80 depth bins, 16 x 44 features,
32 channels into 200 x 200 x 16 voxels; 3D deformable attention on the 50 x 50 x 16 compact
volume, 8 heads x 32 channels, 1 level, 4 points, for the encoder (40000 queries) and the decoder
(250 queries); mmcv's 2D MultiScaleDeformableAttention at the same sample count (200 x 200 map)
and at the image cross-attention's size, where it is compared with trackocc's 3D kernels run
on one-voxel-deep levels (``multi_scale_deformable_attn_2d``);
the sparse voxel refiner against the dense 3D convolutions it replaces at 200 x 200 x 16; the
panoptic merge (inference only, forward) over 200 x 200 x 16 of 264 track + 17 stuff queries
(40 % valid) and of a 400-query budget + 17 stuff queries of which ~10 % may be kept (as a
trained model streams: a few dozen live tracks, the rest padding).
Times are CUDA-event medians in milliseconds; memory is the peak allocated during fwd + bwd.
A call timed alone includes its host side (Python, the autograd engine, kernel launches);
``--graph`` adds the fwd + bwd of each implementation captured once as a CUDA graph and
replayed (``graph_replay_ms``): the device time of its kernels, as the model's CUDA graphs
replay them, and the speed-up on that clock. ``--msda-locations local`` samples the 3D
deformable attention around each query's own voxel (2-voxel spread, as the encoder's
self-attention does; the decoder's 250 queries evenly spaced through the volume) instead of
uniformly over the volume.
``--profile PREFIX`` also writes each implementation's fwd + bwd kernel table
(``torch.profiler``) to ``PREFIX<op>_<size>_<dtype>_<impl>.txt`` and prints the kernel count
and the summed kernel time per call: a call much longer than its kernels is bound by the host.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, List, Optional

import torch

from trackocc.analysis.memory import peak_mib_of
from trackocc.analysis.timing import graph_replay_ms, median_ms
from trackocc.evaluation.functional import atomic_write_text
from trackocc.structures import GRID_MIN, GRID_SHAPE, VOXEL_SIZE
from trackocc.ops import (bev_pool_v2, multi_scale_deformable_attn_2d,
                          multi_scale_deformable_attn_3d, voxel_pooling_prepare)

LOWER, STEP, SIZE = GRID_MIN, (VOXEL_SIZE,) * 3, GRID_SHAPE


def frustum_coor(B=1, N=5, D=80, h=16, w=44, img=(256, 704)) -> torch.Tensor:
    """(B, N, D, h, w, 3) ego coordinates of a ring of N pinhole cameras, depths 2-42 m."""
    H, W = img
    f = 0.8 * W / 2
    u = torch.linspace(0, W - 1, w, device='cuda').view(1, 1, w).expand(D, h, w)
    v = torch.linspace(0, H - 1, h, device='cuda').view(1, h, 1).expand(D, h, w)
    d = torch.arange(2.0, 42.0, 0.5, device='cuda')[:D].view(D, 1, 1).expand(D, h, w)
    xc, yc = (u - W / 2) * d / f, (v - H / 2) * d / f
    cams = []
    for n in range(N):
        yaw = 2 * math.pi * n / N
        x = 1.5 + d * math.cos(yaw) + xc * math.sin(yaw)
        y = d * math.sin(yaw) - xc * math.cos(yaw)
        cams.append(torch.stack([x, y, 2.0 - yc], -1))
    return torch.stack(cams).unsqueeze(0).expand(B, -1, -1, -1, -1, -1).contiguous()


class Table:
    """Rows of a markdown table."""

    def __init__(self, graph: bool = False):
        self.rows: List[List[str]] = []
        self.graph = graph

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])
        print(' | '.join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        head = ['op', 'size', 'dtype', 'impl', 'fwd ms', 'fwd+bwd ms', 'peak MiB',
                'speed-up fwd / fwd+bwd']
        if self.graph:
            head += ['graph fwd+bwd ms', 'speed-up graph']
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        lines += ['| ' + ' | '.join(r) + ' |' for r in self.rows]
        return '\n'.join(lines)


def _fwd_bwd_fns(forward: Callable[[], torch.Tensor], inputs):
    grad = {}

    def fwd():
        with torch.no_grad():
            return forward()

    def fwd_bwd():
        for t in inputs:
            t.grad = None
        out = forward()
        if 'g' not in grad:
            grad['g'] = torch.randn_like(out)
        out.backward(grad['g'])

    return fwd, fwd_bwd


def profile_kernels(fn: Callable[[], object], path: str, calls: int = 5) -> str:
    """Profile ``calls`` calls of ``fn`` on the GPU; write the kernel table to ``path`` and
    return a one-line summary (kernels and kernel milliseconds per call)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / calls
    summary = f'{len(kernels) / calls:.0f} kernels, {kernel_ms:.3f} ms of kernel time per call'
    table = prof.key_averages().table(sort_by='self_device_time_total', row_limit=25,
                                      max_name_column_width=90)
    atomic_write_text(path, f'{summary} ({calls} calls)\n\n{table}\n')
    return summary


def _compare(table: Table, op: str, size: str, dtype: torch.dtype, impls, args,
             graph_impls: Optional[dict] = None) -> None:
    """Time every implementation; ``graph_impls`` (impl -> fwd+bwd callable) replaces an
    implementation's callable for the graph capture where the eager one cannot be captured."""
    results = {}
    for impl, (fwd, fwd_bwd) in impls.items():
        try:
            t_f = median_ms(fwd, args.warmup, args.iters)
            t_fb = median_ms(fwd_bwd, args.warmup, args.iters)
            mem = peak_mib_of(fwd_bwd)
            t_g = None
            if args.graph:
                t_g = graph_replay_ms((graph_impls or {}).get(impl, fwd_bwd), args.warmup,
                                      args.iters)
            if args.profile:
                where = size.split()[-1] if size.split()[-1] in ('uniform', 'local') else ''
                tag = (f'{op}_{size.split()[0]}{where}_{str(dtype).replace("torch.", "")}'
                       f'_{impl}')
                tag = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in tag)
                print(f'[profile] {tag} fwd+bwd: '
                      f'{profile_kernels(fwd_bwd, f"{args.profile}{tag}.txt")}', flush=True)
        except torch.cuda.OutOfMemoryError:
            cells = [op, size, str(dtype).replace('torch.', ''), impl, 'OOM', 'OOM', '-', '-']
            table.add(*cells, *(['-', '-'] if args.graph else []))
            continue
        results[impl] = (t_f, t_fb, t_g)
        ref = results.get('pytorch')
        versus = ref and impl != 'pytorch'
        speed = f'{ref[0] / t_f:.1f}x / {ref[1] / t_fb:.1f}x' if versus else '-'
        cells = [op, size, str(dtype).replace('torch.', ''), impl, f'{t_f:.3f}', f'{t_fb:.3f}',
                 f'{mem:.0f}', speed]
        if args.graph:
            cells += [f'{t_g:.4f}', f'{ref[2] / t_g:.1f}x' if versus else '-']
        table.add(*cells)


def bench_bev_pool(table: Table, args) -> None:
    coor = frustum_coor()
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    C = 32
    shape = (1, SIZE[2], SIZE[1], SIZE[0], C)
    size = f'5x80x16x44 C{C} -> 200x200x16 ({r.ranks_bev.numel()} pts)'
    for dtype in (torch.float32, torch.float16):
        depth = torch.rand(1, 5, 80, 16, 44, device='cuda').softmax(2).to(dtype)
        feat = torch.randn(1, 5, 16, 44, C, device='cuda', dtype=dtype)
        depth.requires_grad_(True)
        feat.requires_grad_(True)
        impls = {}
        for impl in (['pytorch'] if dtype == torch.float32 else []) + ['ext']:
            def forward(impl=impl):
                return bev_pool_v2(depth, feat, *r[:3], shape, *r[3:], impl=impl)
            impls[impl] = _fwd_bwd_fns(forward, (depth, feat))
        _compare(table, 'bev_pool_v2', size, dtype, impls, args)
    # the ranks are computed once per frame in the view transformer: report their cost too
    t = median_ms(lambda: voxel_pooling_prepare(coor, LOWER, STEP, SIZE), args.warmup, args.iters)
    table.add('voxel_pooling_prepare', '5x80x16x44', 'float32', 'pytorch', f'{t:.3f}', '-', '-',
              '-')


def _msda_inputs(Q, dtype, M=8, Dh=32, P=4, shape=(50, 50, 16), locations='uniform'):
    shapes = torch.tensor([shape], device='cuda')
    starts = torch.zeros(1, dtype=torch.long, device='cuda')
    S = shape[0] * shape[1] * shape[2]
    value = torch.randn(1, S, M, Dh, device='cuda', dtype=dtype, requires_grad=True)
    if locations == 'uniform':
        loc = torch.rand(1, Q, M, 1, P, 3, device='cuda')
    else:  # around each query's voxel centre: the encoder's queries are the voxels in order;
        # fewer queries (the decoder's) sit evenly spaced through the volume, as the
        # reference points of instances spread over the scene (not all in its first voxels)
        size = torch.tensor(shape, device='cuda', dtype=torch.float32)
        cells = torch.arange(Q, device='cuda') * S // Q
        voxel = torch.stack([cells // (shape[1] * shape[2]), cells // shape[2] % shape[1],
                             cells % shape[2]], -1)
        centre = (voxel + 0.5) / size
        spread = 2.0 * torch.randn(1, Q, M, 1, P, 3, device='cuda') / size
        loc = (centre.view(1, Q, 1, 1, 1, 3) + spread).clamp(0, 1)
    loc.requires_grad_(True)
    attn = torch.rand(1, Q, M, 1, P, device='cuda').softmax(-1).requires_grad_(True)
    return value, shapes, starts, loc, attn


def bench_msda3d(table: Table, args) -> None:
    for locations in args.msda_locations:
        for name, Q in (('encoder', 50 * 50 * 16), ('decoder', 250)):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                value, shapes, starts, loc, attn = _msda_inputs(Q, dtype, locations=locations)
                # the reference reads the shapes on the host: CPU copies keep it capturable
                host = (shapes.cpu(), starts.cpu())
                impls, graph_impls = {}, {}
                for impl in (['pytorch'] if dtype == torch.float32 else []) + ['ext']:
                    def forward(impl=impl, meta=(shapes, starts)):
                        return multi_scale_deformable_attn_3d(value, *meta, loc, attn,
                                                              impl=impl)
                    impls[impl] = _fwd_bwd_fns(forward, (value, loc, attn))
                    if impl == 'pytorch':
                        graph_impls[impl] = _fwd_bwd_fns(
                            lambda fn=forward: fn('pytorch', host), (value, loc, attn))[1]
                _compare(table, 'msda_3d', f'{name}: Q{Q} 50x50x16 8hx32 P4 {locations}',
                         dtype, impls, args, graph_impls)


def _msda_2d_impls(shapes: List[List[int]], B: int, Q: int, P: int, with_trackocc: bool,
                   M: int = 8, Dh: int = 32) -> dict:
    """fwd / fwd+bwd callables of the 2D deformable attention on random inputs (fp32):
    mmcv's reference and CUDA kernel, and (``with_trackocc``) trackocc's msda_2d."""
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    shapes_t = torch.tensor(shapes, device='cuda')
    sizes = shapes_t.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    L = len(shapes)
    value = torch.randn(B, int(sizes.sum()), M, Dh, device='cuda', requires_grad=True)
    loc = torch.rand(B, Q, M, L, P, 2, device='cuda', requires_grad=True)
    attn = torch.rand(B, Q, M, L, P, device='cuda').softmax(-1).requires_grad_(True)
    fns = {
        'pytorch': lambda: multi_scale_deformable_attn_pytorch(value, shapes_t, loc, attn),
        'mmcv-cuda-2d': lambda: MultiScaleDeformableAttnFunction.apply(
            value, shapes_t, starts, loc, attn, 64),
    }
    if with_trackocc:
        fns['trackocc-msda-2d'] = lambda: multi_scale_deformable_attn_2d(
            value, shapes_t, starts, loc, attn)
    return {name: _fwd_bwd_fns(fn, (value, loc, attn)) for name, fn in fns.items()}


def bench_mmcv(table: Table, args) -> None:
    """mmcv's 2D kernel at the 3D kernel's sample count, and at the image cross-attention's
    size against trackocc's 3D kernels with one-voxel-deep levels (fp32)."""
    try:
        import mmcv.ops.multi_scale_deform_attn  # noqa: F401
    except ImportError as err:
        print(f'mmcv not importable, skipping the mmcv comparison: {err}', file=sys.stderr)
        return
    _compare(table, 'mmcv msda 2d', 'Q40000 200x200 8hx32 P4', torch.float32,
             _msda_2d_impls([[200, 200]], B=1, Q=40000, P=4, with_trackocc=False), args)
    # 5 cameras as the batch, each with its visible voxel queries (padded to the largest
    # count), 4 FPN levels of a 704 x 256 input, 8 heads x 32, 8 points
    _compare(table, 'image cross-attn', '5cams Q12000 4 levels of 704x256 8hx32 P8',
             torch.float32,
             _msda_2d_impls([[32, 88], [16, 44], [8, 22], [4, 11]], B=5, Q=12000, P=8,
                            with_trackocc=True), args)


def bench_refiner(table: Table, args) -> None:
    """Sparse voxel refiner vs the dense full-resolution 3D convolutions it replaces."""
    try:
        from trackocc.models.refiners import SparseVoxelRefiner, DenseVoxelRefiner
    except ImportError as err:
        print(f'refiner not importable, skipping: {err}', file=sys.stderr)
        return
    C = args.refiner_channels
    for occupancy in (0.05, 0.15):
        for dtype in (torch.float32, torch.float16):
            feats = torch.randn(1, C, *SIZE, device='cuda', dtype=dtype, requires_grad=True)
            occupied = torch.rand(1, *SIZE, device='cuda') < occupancy
            impls = {}
            for name, cls in (('dense', DenseVoxelRefiner), ('sparse', SparseVoxelRefiner)):
                model = cls(in_channels=C, mid_channels=args.refiner_mid,
                            num_blocks=args.refiner_blocks).cuda().to(dtype)

                def forward(model=model):
                    return model(feats, occupied)
                impls[name] = _fwd_bwd_fns(forward, (feats, ))
            # 'pytorch' plays the reference role in the speed-up column
            impls = {'pytorch' if k == 'dense' else k: v for k, v in impls.items()}
            _compare(table, 'voxel refiner (pytorch = dense)',
                     f'{C}->{args.refiner_mid}ch 200x200x16, {occupancy:.0%} occupied, '
                     f'{args.refiner_blocks} blocks',
                     dtype, impls, args)


def bench_merge(table: Table, args) -> None:
    """merge_panoptic with the fused statistics kernel vs the PyTorch reference pass."""
    from trackocc.models.heads import merge_panoptic
    voxels = math.prod(SIZE)
    for num_thing, num_stuff, valid_fraction in ((264, 17, 0.4), (400, 17, 0.1)):
        gen = torch.Generator(device='cuda').manual_seed(0)
        cls = torch.randn(num_thing + num_stuff, 16, generator=gen, device='cuda') * 3
        ids = torch.arange(num_thing + num_stuff, device='cuda')
        valid = torch.rand(num_thing + num_stuff, generator=gen,
                           device='cuda') < valid_fraction
        size = f'{num_thing}+{num_stuff} x 200x200x16, {valid_fraction:.0%} valid'
        for dtype in (torch.float32, torch.bfloat16):
            blocks = [(torch.randn(n, voxels, generator=gen, device='cuda') * 6).to(dtype)
                      for n in (num_thing, num_stuff)]
            ref = None
            for impl in ('pytorch', 'ext'):
                def forward(impl=impl):
                    return merge_panoptic(cls, blocks, ids, 15, 0.3, 0.7, valid=valid,
                                          impl=impl)
                t_f = median_ms(forward, args.warmup, args.iters)
                mem = peak_mib_of(forward)
                if args.profile:
                    tag = (f'merge{num_thing}_{str(dtype).replace("torch.", "")}_{impl}')
                    print(f'[profile] {tag} fwd: '
                          f'{profile_kernels(forward, f"{args.profile}{tag}.txt")}', flush=True)
                ref = t_f if impl == 'pytorch' else ref
                table.add('panoptic merge', size, str(dtype).replace('torch.', ''), impl,
                          f'{t_f:.3f}', '-', f'{mem:.0f}',
                          f'{ref / t_f:.1f}x / -' if impl == 'ext' else '-')


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ops = ['bev_pool', 'msda3d', 'mmcv', 'refiner', 'merge']
    parser.add_argument('--ops', nargs='+', default=ops, choices=ops)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--refiner-channels', type=int, default=256,
                        help='mask-feature width E of the refined features (paper: 256)')
    parser.add_argument('--refiner-mid', type=int, default=64,
                        help='width of the refiner residual blocks')
    parser.add_argument('--refiner-blocks', type=int, default=2)
    parser.add_argument('--out', help='write the markdown table to this file')
    parser.add_argument('--graph', action='store_true',
                        help='also time fwd + bwd replayed from a CUDA graph (device time)')
    parser.add_argument('--msda-locations', nargs='+', default=['uniform'],
                        choices=['uniform', 'local'],
                        help='3D deformable attention sampling locations: uniform over the '
                        'volume, or around each query\'s voxel')
    parser.add_argument('--profile', metavar='PREFIX',
                        help='write each fwd + bwd kernel table to '
                        'PREFIX<op>_<size>_<dtype>_<impl>.txt')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error('the benchmark needs a CUDA device')
    print(f'device: {torch.cuda.get_device_name()}, torch {torch.__version__}', flush=True)
    table = Table(graph=args.graph)
    for op in args.ops:
        {'bev_pool': bench_bev_pool, 'msda3d': bench_msda3d, 'mmcv': bench_mmcv,
         'refiner': bench_refiner, 'merge': bench_merge}[op](table, args)
    text = f'device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n\n' + \
        table.markdown()
    print(text)
    if args.out:
        atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
