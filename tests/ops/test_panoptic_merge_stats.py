"""panoptic_merge_stats: compiled CPU / CUDA kernels against the pure-PyTorch reference, and
merge_panoptic on top of either. The statistics are integer counts and indices of an
inference-only op, so there is no backward to compare."""
import pytest
import torch

from trackocc.models.heads import merge_panoptic
from trackocc.ops.ext_loader import load_ext
from trackocc.ops import (ext_available, ext_with_cuda, panoptic_merge_stats,
                          panoptic_merge_stats_pytorch)

FREE = 15
needs_ext = pytest.mark.skipif(not ext_available(),
                               reason='trackocc._ext not built (setup.py build_ext)')
needs_cuda = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]


def merge_case(gen, num, voxels, quantize=False, dtype=torch.float32):
    """Class logits, (num, voxels) mask logits, ids; ``quantize`` makes many exact ties of
    score * prob (integer logits, -inf masks whose probability is 0). A fifth of the logits
    lie near 0 (exact zeros, +-1e-3 and magnitudes 1e-5 .. 5e-3 of either sign), where the
    kernels switch from the logit's sign to the sigmoid to decide prob >= 0.5."""
    cls = torch.randn(num, 16, generator=gen) * 3
    masks = torch.randn(num, voxels, generator=gen) * 4
    if quantize:
        cls = cls.round()
        masks = torch.where(torch.rand(num, voxels, generator=gen) < 0.3,
                            torch.full_like(masks, -float('inf')), masks.round())
    sign = torch.randint(0, 2, (num, voxels), generator=gen) * 2.0 - 1.0
    near = sign * 10 ** (torch.rand(num, voxels, generator=gen) * 2.7 - 5.0)
    near = torch.where(torch.rand(num, voxels, generator=gen) < 0.2,
                       (torch.randint(-1, 2, (num, voxels), generator=gen) * 1e-3), near)
    masks = torch.where(torch.rand(num, voxels, generator=gen) < 0.2, near, masks)
    ids = torch.randint(0, 50, (num, ), generator=gen)
    return cls, masks.to(dtype), ids


def scores_keep(cls, gen, valid_fraction=0.8):
    scores, labels = cls.float().sigmoid().max(-1)
    keep = (labels != FREE) & (scores > 0.3)
    keep &= torch.rand(len(cls), generator=gen) < valid_fraction
    return scores, keep


def assert_same_stats(got, want):
    for name, a, b in zip(want._fields, got, want):
        assert a.dtype == b.dtype, name
        assert torch.equal(a.cpu(), b.cpu()), name


def check_impl(device, dtype, quantize, voxels=300, trials=12, seed=0, max_rows=20):
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        num = int(torch.randint(1, max_rows, (1, ), generator=gen))
        cls, masks, ids = merge_case(gen, num, voxels, quantize, dtype)
        scores, keep = scores_keep(cls, gen)
        if dtype == torch.float64:
            scores = scores.double()
        split = int(torch.randint(0, num + 1, (1, ), generator=gen))
        blocks = [masks[:split].to(device), masks[split:].to(device)]
        args = (scores.to(device), keep.to(device))
        for skip in (False, True):
            want = panoptic_merge_stats_pytorch(masks, scores, keep, skip)
            assert_same_stats(panoptic_merge_stats(blocks, *args, skip_dropped=skip,
                                                   impl='ext'), want)
            assert_same_stats(panoptic_merge_stats(masks.to(device), *args, skip_dropped=skip,
                                                   impl='ext'), want)
        # merge_panoptic takes class logits: its reference runs on the same device, so that
        # both see that device's sigmoid scores (CPU and CUDA may differ in the last bit)
        for overlap in (0.0, 0.7, 1.0):
            sem = merge_panoptic(cls.to(device), blocks, ids.to(device), FREE, 0.3, overlap,
                                 impl='ext')
            ref = merge_panoptic(cls.to(device), masks.to(device), ids.to(device), FREE, 0.3,
                                 overlap, impl='pytorch')
            assert torch.equal(sem[0], ref[0]) and torch.equal(sem[1], ref[1])


def test_reference_blocks_equal_concatenated_rows():
    gen = torch.Generator().manual_seed(3)
    cls, masks, _ = merge_case(gen, 9, 50)
    scores, keep = scores_keep(cls, gen)
    assert_same_stats(panoptic_merge_stats_pytorch([masks[:4], masks[4:]], scores, keep),
                      panoptic_merge_stats_pytorch(masks, scores, keep))


def test_reference_stats_by_hand():
    masks = torch.tensor([[4., 4., -4., -4.], [-4., 5., 5., -4.], [9., 9., 9., 9.]])
    scores = torch.tensor([0.9, 0.8, 0.99])
    keep = torch.tensor([True, True, False])  # row 2 is dropped: it never wins
    s = panoptic_merge_stats_pytorch(masks, scores, keep)
    assert s.winner.tolist() == [0, 0, 1, 0]  # voxel 3: nothing above -1 but row 0 first
    assert s.in_own.tolist() == [True, True, True, False]
    assert s.own_area.tolist() == [2, 2, 4]
    assert s.won_area.tolist() == [3, 1, 0]
    assert s.kept_area.tolist() == [2, 1, 0]


def test_reference_skip_dropped_by_hand():
    masks = torch.tensor([[4., 4., -4., -4.], [-4., 5., 5., -4.], [9., 9., 9., 9.]])
    scores = torch.tensor([0.9, 0.8, 0.99])
    keep = torch.tensor([True, True, False])  # row 2 is not read: an empty mask
    s = panoptic_merge_stats_pytorch(masks, scores, keep, skip_dropped=True)
    assert s.winner.tolist() == [0, 0, 1, 0]
    assert s.in_own.tolist() == [True, True, True, False]
    assert s.own_area.tolist() == [2, 2, 0]
    assert s.won_area.tolist() == [3, 1, 0] and s.kept_area.tolist() == [2, 1, 0]
    # nothing kept: every voxel goes to row 0, outside its (empty) mask
    none = panoptic_merge_stats_pytorch(masks, scores, torch.zeros(3, dtype=torch.bool), True)
    assert none.winner.tolist() == [0] * 4 and none.in_own.tolist() == [False] * 4
    assert none.own_area.tolist() == [0] * 3 and none.won_area.tolist() == [4, 0, 0]


def test_skip_dropped_keeps_the_merge_decision():
    """Reading only the kept rows changes no accepted prediction and no voxel's outcome."""
    from trackocc.models.heads.panoptic_merge import _merge_decision, _voxel_outcome
    gen = torch.Generator().manual_seed(11)
    for trial in range(20):
        num = int(torch.randint(1, 30, (1, ), generator=gen))
        cls, masks, ids = merge_case(gen, num, 400, quantize=trial % 2 == 1)
        valid = torch.rand(num, generator=gen) < (0.0 if trial == 4 else 0.5)
        outcome = []
        for skip in (False, True):
            _, decision = _merge_decision(cls, [masks], ids, FREE, 0.3, 0.7, valid, 'pytorch',
                                          skip_dropped=skip)
            take, classes, winner = _voxel_outcome(decision, FREE, torch.int32)
            outcome.append((decision.accepted, take, classes, torch.where(take, winner, -1)))
        for a, b in zip(*outcome):
            assert torch.equal(a, b)


def test_argument_errors():
    masks = torch.zeros(3, 10)
    scores, keep = torch.zeros(3), torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match='scores'):
        panoptic_merge_stats(masks, scores[:2], keep)
    with pytest.raises(ValueError, match='differ in dtype'):
        panoptic_merge_stats([masks, masks.double()], torch.zeros(6), keep.repeat(2))
    with pytest.raises(ValueError, match='one N'):
        panoptic_merge_stats([masks, masks[:, :5]], torch.zeros(6), keep.repeat(2))
    with pytest.raises(ValueError, match='impl'):
        panoptic_merge_stats(masks, scores, keep, impl='triton')


@needs_ext
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('quantize', [False, True])
def test_cpu_kernel_matches_reference(dtype, quantize):
    check_impl('cpu', dtype, quantize)


@needs_ext
def test_cpu_kernel_edge_cases():
    gen = torch.Generator().manual_seed(5)
    cls, masks, _ = merge_case(gen, 6, 9000)  # more than one CPU chunk of voxels
    scores, _ = scores_keep(cls, gen)
    for keep in (torch.zeros(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool)):
        for skip in (False, True):
            assert_same_stats(panoptic_merge_stats(masks, scores, keep, skip_dropped=skip,
                                                   impl='ext'),
                              panoptic_merge_stats_pytorch(masks, scores, keep, skip))
    empty = panoptic_merge_stats(masks[:, :0], scores, keep, impl='ext')
    assert empty.winner.shape == (0, ) and empty.own_area.tolist() == [0] * 6
    with pytest.raises(RuntimeError, match='scores must be'):  # the C++ checks name the op
        load_ext().panoptic_merge_stats([masks], scores.double(), keep)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('quantize', [False, True])
@pytest.mark.parametrize('_', [pytest.param(None, marks=needs_cuda)])
def test_cuda_kernel_matches_reference(dtype, quantize, _):
    if not ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')
    # 5000 voxels: 16-byte loads of 2 .. 8 voxels per thread; 5003: one voxel per thread
    for voxels in (5000, 5003):
        check_impl('cuda', dtype, quantize, voxels=voxels)


@pytest.mark.parametrize('_', [pytest.param(None, marks=needs_cuda)])
def test_cuda_kernel_many_rows_and_unaligned_blocks(_):
    """Past 3 072 rows the kernel's shared memory passes 48 KiB (the launch raises its
    limit); a row block starting off a 16-byte boundary makes it load voxel by voxel."""
    if not ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')
    check_impl('cuda', torch.bfloat16, False, voxels=64, trials=2, max_rows=4096)
    gen = torch.Generator().manual_seed(2)
    cls, masks, _ = merge_case(gen, 9, 4001, dtype=torch.bfloat16)
    scores, keep = scores_keep(cls, gen)
    # rows of 4000 voxels starting 2 bytes past the allocation
    rows = masks.flatten().cuda()[1:1 + 9 * 4000].view(9, 4000)
    for skip in (False, True):
        assert_same_stats(
            panoptic_merge_stats([rows[:4], rows[4:]], scores.cuda(), keep.cuda(),
                                 skip_dropped=skip, impl='ext'),
            panoptic_merge_stats_pytorch(rows.cpu(), scores, keep, skip))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('_', [pytest.param(None, marks=needs_cuda)])
def test_cuda_kernel_paper_size(dtype, _):
    """264 thing + 17 stuff rows over the 200 x 200 x 16 grid, as in a streamed frame."""
    if not ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')
    gen = torch.Generator(device='cuda').manual_seed(0)
    thing = (torch.randn(264, 640000, generator=gen, device='cuda') * 6).to(dtype)
    stuff = (torch.randn(17, 640000, generator=gen, device='cuda') * 6).to(dtype)
    scores = torch.rand(281, generator=gen, device='cuda')
    keep = torch.rand(281, generator=gen, device='cuda') < 0.5
    got = panoptic_merge_stats([thing, stuff], scores, keep, impl='ext')
    want = panoptic_merge_stats_pytorch([thing, stuff], scores, keep)
    assert_same_stats(got, want)
    assert int(got.won_area.sum()) == 640000
