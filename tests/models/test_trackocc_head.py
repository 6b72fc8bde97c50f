"""TrackOccHead and MaskDecoder: shapes, gradients, losses and input checks (tiny sizes)."""
import pytest
import torch

import trackocc  # noqa: F401  (registers the modules)
from mmdet3d.registry import MODELS

E = 32
OCC = (8, 8, 4)
COMPACT = (4, 4, 4)
PC_RANGE = [-8.0, -8.0, -1.0, 8.0, 8.0, 5.4]
CLASS_WEIGHT = [float(i + 1) for i in range(16)]


def build_head(num_layers=2, with_velo=True, loss_sem=True):
    cfg = dict(type='TrackOccHead', num_classes=16, thing_classes=[1, 2, 4], embed_dims=E,
               num_stuff_queries=5, occ_size=OCC, pc_range=PC_RANGE,
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
    expect = {f'loss_stuff_{k}_d{l}' for k in ('cls', 'mask', 'dice') for l in (0, 1)}
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
