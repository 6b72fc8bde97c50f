"""ncu driver: two fwd + bwd calls of bev_pool_v2 (fp32) at the paper size."""
import torch
from tools.analysis_tools.benchmark_ops import LOWER, SIZE, STEP, frustum_coor
from trackocc.ops import bev_pool_v2, voxel_pooling_prepare
r = voxel_pooling_prepare(frustum_coor(), LOWER, STEP, SIZE)
depth = torch.rand(1, 5, 80, 16, 44, device='cuda').softmax(2).requires_grad_(True)
feat = torch.randn(1, 5, 16, 44, 32, device='cuda', requires_grad=True)
shape = (1, SIZE[2], SIZE[1], SIZE[0], 32)
g = torch.randn(1, 32, SIZE[2], SIZE[1], SIZE[0], device='cuda')
for _ in range(2):
    out = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:])
    out.backward(g)
torch.cuda.synchronize()
print('ok')
