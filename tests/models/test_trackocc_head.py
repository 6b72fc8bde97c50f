"""TrackOccHead and MaskDecoder: shapes, gradients, losses and input checks (tiny sizes)."""
import pytest
import torch

from trackocc.models.heads.trackocc_head import float32_mask_logits, mask_logits
from trackocc.registry import MODELS

E = 32
OCC = (8, 8, 4)
COMPACT = (4, 4, 4)
PC_RANGE = [-8.0, -8.0, -1.0, 8.0, 8.0, 5.4]
CLASS_WEIGHT = [float(i + 1) for i in range(16)]


def build_head(num_layers=2, with_velo=True, loss_sem=True, num_stuff=5):
    cfg = dict(type='TrackOccHead', num_classes=16, thing_classes=[1, 2, 4], embed_dims=E,
               num_stuff_queries=num_stuff, occ_size=OCC, pc_range=PC_RANGE,
               decoder=dict(type='MaskDecoder', num_layers=num_layers, num_heads=4,
                            num_points=2),
               with_velo=with_velo, sem_hidden_channels=16,
               loss_sem=dict(type='mmdet.CrossEntropyLoss', class_weight=CLASS_WEIGHT,
                             loss_weight=2.0) if loss_sem else None)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def inputs(B=2, Q=6):
    torch.manual_seed(0)
    return (torch.randn(B, Q, 2 * E, requires_grad=True), torch.rand(B, Q, 3),
            torch.randn(B, E, *COMPACT, requires_grad=True),
            torch.randn(B, E, *OCC, requires_grad=True))


def test_head_output_shapes():
    head = build_head(num_layers=2)
    query, ref, compact, mask_feats = inputs()
    out = head(query, ref, compact, mask_feats)
    assert len(out['thing_cls']) == 2
    assert out['thing_cls'][-1].shape == (2, 6, 16)
    assert out['thing_masks'][-1].shape == (2, 6, *OCC)
    assert out['thing_centers'][-1].shape == (2, 6, 6)
    assert out['stuff_cls'][-1].shape == (2, 5, 16)
    assert out['stuff_masks'][-1].shape == (2, 5, *OCC)
    assert out['thing_ref_pts'].shape == (2, 6, 3)
    assert out['thing_embed'].shape == (2, 6, E)
    assert out['sem_logits'].shape == (2, 16, *OCC)
    # centres are the refined reference points in metres, inside the grid range
    xyz = out['thing_centers'][-1][..., :3]
    lo, hi = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    assert ((xyz >= lo) & (xyz <= hi)).all()
    assert torch.allclose((xyz - lo) / (hi - lo), out['thing_ref_pts'], atol=1e-5)
    assert not torch.allclose(out['thing_ref_pts'], ref)  # refined by the reg branch
    no_velo = build_head(num_layers=1, with_velo=False)
    assert no_velo(query, ref, compact, mask_feats)['thing_centers'][-1].shape == (2, 6, 3)


def test_head_gradients_reach_inputs_and_parameters():
    head = build_head(num_layers=1)
    query, ref, compact, mask_feats = inputs(B=1)
    out = head(query, ref, compact, mask_feats)
    total = (out['thing_cls'][-1].sum() + out['thing_masks'][-1].mean() +
             out['thing_centers'][-1].sum() + out['stuff_masks'][-1].mean() +
             out['stuff_cls'][-1].sum() + out['sem_logits'].mean() + out['thing_embed'].sum())
    total.backward()
    for t in (query, compact, mask_feats):
        assert t.grad is not None and t.grad.abs().sum() > 0
    for name in ('stuff_embedding.weight', 'cls_embed.weight', 'mask_embed.4.weight',
                 'velo_branches.0.weight', 'sem_head.2.weight',
                 'decoder.reg_branches.0.weight',
                 'decoder.layers.0.cross_attn.sampling_offsets.weight',
                 'decoder.layers.0.cross_attn.value_proj.weight'):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_head_loss_terms():
    head = build_head(num_layers=2)
    query, ref, compact, mask_feats = inputs(B=2)
    out = head(query, ref, compact, mask_feats)
    sem = torch.randint(0, 16, (2, *OCC))
    visible = torch.rand(2, *OCC) > 0.3
    losses = head.loss(out, sem, visible)
    expect = {f'loss_stuff_{k}_d{d}' for k in ('cls', 'mask', 'dice') for d in (0, 1)}
    assert set(losses) == expect | {'loss_sem'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    # semantic loss = class-weighted mean CE over visible voxels, averaged over the batch
    logits = out['sem_logits'].permute(0, 2, 3, 4, 1)
    weight = torch.tensor(CLASS_WEIGHT)
    ref_loss = sum(torch.nn.functional.cross_entropy(logits[b][visible[b]], sem[b][visible[b]],
                                                     weight=weight) for b in range(2)) / 2
    assert losses['loss_sem'].item() == pytest.approx(2.0 * ref_loss.item(), rel=1e-4)
    sum(losses.values()).backward()
    assert mask_feats.grad.abs().sum() > 0


def test_semantic_loss_equals_the_former_masked_form():
    """Per-voxel weights instead of bool-mask indexing and mmdet's class_weight list: the
    former loss and gradient (labels out of range, and a sample without a counted voxel)."""
    head = build_head(num_layers=1)
    assert head.loss_sem.class_weight is None  # applied from the sem_class_weight buffer
    former = MODELS.build(dict(type='mmdet.CrossEntropyLoss', class_weight=CLASS_WEIGHT,
                               loss_weight=2.0))
    g = torch.Generator().manual_seed(6)
    sem = torch.randint(-1, 18, (3, *OCC), generator=g)
    sem[0, 0, 0, :2] = 255
    visible = torch.rand(3, *OCC, generator=g) > 0.4
    visible[2] = False
    logits = torch.randn(3, 16, *OCC, generator=g) * 2
    results = []
    for form in ('new', 'former'):
        x = logits.clone().requires_grad_(True)
        if form == 'new':
            empty = [torch.zeros(3, 1, 16)]
            loss = head.loss(dict(stuff_cls=empty, stuff_masks=[torch.zeros(3, 1, *OCC)],
                                  sem_logits=x), sem, visible)['loss_sem']
        else:
            flat = x.permute(0, 2, 3, 4, 1)
            loss = flat.sum() * 0
            for b in range(3):
                valid = visible[b] & (sem[b] >= 0) & (sem[b] < 16)
                labels = sem[b][valid]
                avg = torch.tensor(CLASS_WEIGHT)[labels].sum().clamp(min=1e-6)
                loss = loss + former(flat[b][valid], labels, avg_factor=avg)
            loss = loss / 3
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert results[0][0] > 0
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-9)


def test_head_rejects_bad_inputs_and_configs():
    head = build_head(num_layers=1)
    query, ref, compact, mask_feats = inputs()
    with pytest.raises(ValueError, match='mask_features'):
        head(query, ref, compact, mask_feats[..., :2])
    with pytest.raises(ValueError, match='thing_query'):
        head(query[..., :E], ref, compact, mask_feats)
    with pytest.raises(ValueError, match='thing_ref_pts'):
        head(query, ref[:, :2], compact, mask_feats)
    with pytest.raises(ValueError, match='class_weight'):
        MODELS.build(dict(type='TrackOccHead', embed_dims=E, occ_size=OCC,
                          loss_sem=dict(type='mmdet.CrossEntropyLoss', class_weight=[1.0])))
    with pytest.raises(ValueError, match='thing_classes'):
        MODELS.build(dict(type='TrackOccHead', embed_dims=E, thing_classes=[15]))


def test_head_losses_and_merge_overfit_a_constructed_scene():
    """Learning check of head + clip matcher + stuff/semantic losses + panoptic merge.

    Learnable features stand in for the encoder. Calibration (AdamW lr 5e-3, 3 stuff
    queries): for seeds 0-4 every class reached IoU >= 0.98 by step 200 and 1.0 at steps 250
    and 300, each instance with a single id (lr 1e-2 converged faster but could diverge
    later). 300 steps and a 0.9 mIoU bar leave a margin; wrong targets, labels or
    visibility handling keep classes near 0.
    """
    from mmengine.structures import BaseDataElement

    from trackocc.models.heads import merge_panoptic
    from trackocc.models.losses import ClipMatcher, build_thing_targets
    torch.manual_seed(0)
    head = build_head(num_layers=1, num_stuff=3)
    matcher = ClipMatcher()
    sem = torch.full(OCC, 15)
    sem[:, :, 0] = 13  # road
    sem[:2, :, 1:3] = 10  # building
    inst = torch.zeros(OCC, dtype=torch.long)
    sem[4:6, 4:6, 1], inst[4:6, 4:6, 1] = 1, 3  # vehicle id 3
    sem[6, 1, 1:3], inst[6, 1, 1:3] = 2, 5  # pedestrian id 5
    visible = torch.ones(OCC, dtype=torch.bool)
    visible[7, 7, 3] = False
    gt = build_thing_targets(
        [BaseDataElement(instances=inst, instance_ids=torch.tensor([3, 5]),
                         instance_labels=torch.tensor([1, 2]))], [torch.eye(4)], PC_RANGE)[0]
    compact = torch.nn.Parameter(torch.randn(1, E, *COMPACT))
    feats = torch.nn.Parameter(torch.randn(1, E, *OCC).relu())
    query = torch.nn.Parameter(torch.randn(1, 10, 2 * E))
    ref = torch.nn.Parameter(torch.zeros(1, 10, 3))
    opt = torch.optim.AdamW(list(head.parameters()) + [query, ref, compact, feats], lr=5e-3)
    for _ in range(300):
        out = head(query, ref.sigmoid(), compact, feats)
        cls, masks = out['thing_cls'][0][0], out['thing_masks'][0][0].flatten(1)
        _, _, src, tgt = matcher.match(torch.full((10, ), -1), cls, masks, gt, visible.flatten())
        losses = head.loss(out, sem[None], visible[None])
        losses.update(matcher.loss(cls, masks, out['thing_centers'][0][0], gt, src, tgt,
                                   visible.flatten()))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        out = head(query, ref.sigmoid(), compact, feats)
    num_stuff = out['stuff_cls'][0].shape[1]
    pred_sem, pred_inst = merge_panoptic(
        torch.cat([out['thing_cls'][0][0][src], out['stuff_cls'][0][0]]),
        torch.cat([out['thing_masks'][0][0][src].flatten(1),
                   out['stuff_masks'][0][0].flatten(1)]),
        torch.cat([gt.obj_ids[tgt], torch.zeros(num_stuff, dtype=torch.long)]), 15)
    pred_sem, pred_inst = pred_sem.view(OCC), pred_inst.view(OCC)
    ious = [(((pred_sem == c) & (sem == c)).sum() / ((pred_sem == c) | (sem == c)).sum()).item()
            for c in (1, 2, 10, 13)]
    assert sum(ious) / 4 >= 0.9, ious
    assert pred_inst[inst == 3].unique().tolist() == [3]
    assert pred_inst[inst == 5].unique().tolist() == [5]


@pytest.mark.parametrize('channels_last', [False, True])
def test_mask_logits_traced_as_matmul_equal_eager(channels_last):
    """The traced (ONNX) form of the mask logits is a MatMul, the eager one an einsum: same
    values, also for channels-last features."""
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 5, 8, generator=g)
    feats = torch.randn(2, 8, 6, 4, 3, generator=g)
    if channels_last:
        feats = feats.to(memory_format=torch.channels_last_3d)
    eager = mask_logits(embed, feats)
    traced = torch.jit.trace(mask_logits, (embed, feats))
    assert 'matmul' in str(traced.graph) and 'einsum' not in str(traced.graph)
    expected = torch.einsum('bqc,bcxyz->bqxyz', embed.double(), feats.double())
    for out in (eager, traced(embed, feats)):
        assert out.shape == (2, 5, 6, 4, 3)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_float32_queries_keeps_the_query_path_out_of_autocast():
    """``float32_queries``: under bf16 autocast the decoder and the per-query outputs are
    the float32 head's, only the voxel-sized mask logits are bf16; without autocast it
    changes nothing."""
    head = build_head(num_layers=2).eval()
    query, ref, compact, mask_feats = (x.detach() for x in inputs())
    query_keys = ('thing_cls', 'thing_centers', 'stuff_cls')
    with torch.no_grad():
        want = head(query, ref, compact, mask_feats)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            plain = head(query, ref, compact, mask_feats)
            head.float32_queries = True
            got = head(query, ref, compact, mask_feats)
        same = head(query, ref, compact, mask_feats)
    for key in query_keys:
        for g, w, p in zip(got[key], want[key], plain[key]):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
            assert (p.float() - w).abs().max() > 1e-3  # bf16 without the option: can fail
    for key in ('thing_ref_pts', 'thing_embed'):
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-6)
    for g, w in zip(got['thing_masks'] + got['stuff_masks'],
                    want['thing_masks'] + want['stuff_masks']):
        assert g.dtype == torch.bfloat16  # the voxel-sized work stays in the autocast dtype
        torch.testing.assert_close(g.float(), w, rtol=0.05, atol=0.05)
    for key, value in want.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(same[key], value)), key


def test_float32_masks_keep_the_mask_logits_in_float32():
    """``float32_masks``: under bf16 autocast the mask logits are float32 and closer to the
    float32 head's than bf16 logits (the decoder's bf16 queries feed both); CPU: from float32
    copies of the bf16-run operands; without autocast it changes nothing."""
    head = build_head(num_layers=2).eval()
    query, ref, compact, mask_feats = (x.detach() for x in inputs())
    with torch.no_grad():
        want = head(query, ref, compact, mask_feats)
        head.float32_queries = True  # the same queries on both sides: only the logits differ
        with torch.autocast('cpu', dtype=torch.bfloat16):
            plain = head(query, ref, compact, mask_feats)
            head.float32_masks = True
            got = head(query, ref, compact, mask_feats)
        same = head(query, ref, compact, mask_feats)
    for key in ('thing_masks', 'stuff_masks'):
        for g, p, w in zip(got[key], plain[key], want[key]):
            assert g.dtype == torch.float32 and p.dtype == torch.bfloat16
            err_f32, err_bf16 = ((x.float() - w).abs().mean() for x in (g, p))
            assert err_f32 < err_bf16 / 2, (key, err_f32, err_bf16)
    for key in ('thing_cls', 'stuff_cls', 'thing_centers'):  # the query path unchanged
        for g, p in zip(got[key], plain[key]):
            assert torch.equal(g, p), key
    for key, value in want.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(same[key], value)), key


def test_float32_mask_logits_equal_the_einsum_of_float32_operands():
    embed = torch.randn(2, 5, 8).bfloat16()
    feats = torch.randn(2, 8, 6, 4, 3).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = float32_mask_logits(embed, feats)
    assert out.dtype == torch.float32 and out.shape == (2, 5, 6, 4, 3)
    torch.testing.assert_close(out, torch.einsum('bqc,bcxyz->bqxyz', embed.float(),
                                                 feats.float()), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_float32_mask_logits_on_cuda_without_a_float32_copy():
    """CUDA: the bf16 operands' product written in float32 (``bmm(out_dtype=)``): nearer the
    float64 product than the bf16 logits."""
    embed = torch.randn(1, 40, 64, device='cuda')
    feats = torch.randn(1, 64, 20, 20, 8, device='cuda')
    exact = torch.einsum('bqc,bcxyz->bqxyz', embed.double(), feats.double())
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = float32_mask_logits(embed, feats)
        plain = mask_logits(embed, feats)
    assert out.dtype == torch.float32 and plain.dtype == torch.bfloat16
    rounded = torch.einsum('bqc,bcxyz->bqxyz', embed.bfloat16().double(),
                           feats.bfloat16().double())  # what the bf16 operands give exactly
    torch.testing.assert_close(out.double(), rounded, rtol=1e-4, atol=1e-4)
    assert (out.double() - exact).abs().mean() < (plain.double() - exact).abs().mean()
