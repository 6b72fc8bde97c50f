"""Matching of mask queries stays solvable under fp16 autocast (costs over many voxels)."""
import torch
from mmdet.registry import TASK_UTILS

from trackocc.models.losses.mask_losses import DEFAULT_ASSIGNER, hungarian_match


def test_hungarian_match_under_fp16_autocast_equals_fp32():
    assigner = TASK_UTILS.build(DEFAULT_ASSIGNER)
    gen = torch.Generator().manual_seed(0)
    Q, K, V = 12, 4, 200_000  # large enough for fp16 cost products to overflow
    cls = torch.randn(Q, 16, generator=gen)
    masks = torch.randn(Q, V, generator=gen) * 10
    labels = torch.randint(0, 16, (K,), generator=gen)
    gt = torch.rand(K, V, generator=gen) > 0.5
    ref = hungarian_match(assigner, cls, masks, labels, gt)
    with torch.autocast('cpu', dtype=torch.float16):
        amp = hungarian_match(assigner, cls, masks, labels, gt)
    assert len(ref[0]) == K
    assert torch.equal(ref[0], amp[0]) and torch.equal(ref[1], amp[1])
