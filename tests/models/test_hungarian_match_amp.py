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


def test_non_finite_mask_logits_leave_their_query_unmatched_without_a_mask_copy():
    """A NaN or inf mask logit makes its query's costs UNSOLVABLE_COST (the (Q, K) sum is
    guarded, the (Q, V) logits are not copied), so the matching stays solvable and picks
    finite queries."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from trackocc.models.losses.mask_losses import UNSOLVABLE_COST, match_cost_matrix

    class NanToNumShapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ == 'nan_to_num':
                self.shapes.append(tuple(out.shape))
            return out

    assigner = TASK_UTILS.build(DEFAULT_ASSIGNER)
    gen = torch.Generator().manual_seed(1)
    Q, K, V = 6, 3, 500
    cls = torch.randn(Q, 16, generator=gen)
    masks = torch.randn(Q, V, generator=gen) * 3
    labels = torch.randint(0, 16, (K,), generator=gen)
    gt = torch.rand(K, V, generator=gen) > 0.5
    src, _ = hungarian_match(assigner, cls, masks, labels, gt)
    bad = int(src[0])  # a query the finite matching picks
    clean = match_cost_matrix(assigner, cls, masks, labels, gt)
    others = [q for q in range(Q) if q != bad]
    for value in (float('nan'), float('inf'), -float('inf')):
        broken = masks.clone()
        broken[bad, 7] = value
        with NanToNumShapes() as seen:
            cost = match_cost_matrix(assigner, cls, broken, labels, gt)
        assert (Q, V) not in seen.shapes and (Q, K) in seen.shapes
        assert torch.isfinite(cost).all()
        assert torch.equal(cost[bad], torch.full((K, ), UNSOLVABLE_COST))
        assert torch.equal(cost[others], clean[others])
        src_b, _ = hungarian_match(assigner, cls, broken, labels, gt)
        assert len(src_b) == K and bad not in src_b.tolist()
