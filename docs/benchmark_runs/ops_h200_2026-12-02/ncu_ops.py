"""One fwd + bwd of bev_pool_v2 and of the 3D deformable attention encoder (fp32, uniform and
local sampling) at the benchmark's paper sizes, after one warm-up call each: a program for
``ncu -k regex:'bev_pool|msda3d'`` to read the kernels' hardware counters."""
import torch

from tools.analysis_tools.benchmark_ops import (LOWER, SIZE, STEP, _msda_inputs,
                                                frustum_coor)
from trackocc.ops import bev_pool_v2, multi_scale_deformable_attn_3d, voxel_pooling_prepare

r = voxel_pooling_prepare(frustum_coor(), LOWER, STEP, SIZE)
depth = torch.rand(1, 5, 80, 16, 44, device='cuda').softmax(2).requires_grad_(True)
feat = torch.randn(1, 5, 16, 44, 32, device='cuda', requires_grad=True)
shape = (1, SIZE[2], SIZE[1], SIZE[0], 32)
for _ in range(2):
    out = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:])
    out.backward(torch.ones_like(out))
for locations in ('uniform', 'local'):
    value, shapes, starts, loc, attn = _msda_inputs(40000, torch.float32, locations=locations)
    for _ in range(2):
        out = multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn)
        out.backward(torch.ones_like(out))
torch.cuda.synchronize()
print('ok')
