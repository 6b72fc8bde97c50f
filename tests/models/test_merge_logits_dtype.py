"""Under AMP the mask logits reach the panoptic merge in the autocast dtype (no float32 copy of
the (Q, X*Y*Z) logits per frame, issue 16 item 2), and the merge, its audit and so the stream
are the same bit for bit as with the float32 copy the reference made."""
import pytest
import torch

import trackocc.models.detectors.stream_inference as stream_module
import trackocc.models.heads.panoptic_merge as merge_module
from test_detector import build, images, make_clip, make_frame
from trackocc.models.detectors.autocast_scope import AutocastScope
from trackocc.models.heads.panoptic_merge import merge_fates, merge_panoptic


def _logits(rows, voxels, seed):
    gen = torch.Generator().manual_seed(seed)
    # around 0 (the 0.5 threshold) with ties at the bf16 resolution
    return (torch.randn(rows, voxels, generator=gen) * 2).to(torch.bfloat16)


@pytest.mark.parametrize('fn', [merge_panoptic, merge_fates])
def test_merge_of_bf16_logits_equals_merge_of_their_float32_copy(fn):
    thing, stuff = _logits(7, 500, 0), _logits(3, 500, 1)
    gen = torch.Generator().manual_seed(2)
    kwargs = dict(cls_logits=torch.randn(10, 4, generator=gen) * 3,
                  segment_ids=torch.tensor([3, 1, 4, 0, 5, 9, 2, 0, 0, 0]), free_class=3,
                  valid=torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool))
    low = fn(mask_logits=[thing, stuff], **kwargs)
    wide = fn(mask_logits=[thing.float(), stuff.float()], **kwargs)
    low = low.values() if isinstance(low, dict) else low
    wide = wide.values() if isinstance(wide, dict) else wide
    for a, b in zip(low, wide):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_region_leaves_only_the_named_outputs_uncast():
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = AutocastScope('reference', 'cpu')
        with amp.outside():
            out = amp.region(lambda x: dict(masks=[x @ x], cls=x @ x, n=3), torch.ones(2, 2),
                             uncast_keys=('masks', ))
    assert out['masks'][0].dtype == torch.bfloat16 and out['cls'].dtype == torch.float32
    assert out['n'] == 3
    with torch.autocast('cpu', dtype=torch.bfloat16), amp.outside():
        with pytest.raises(TypeError, match=r"uncast_keys \('masks',\) name dict entries"):
            amp.region(lambda x: [x @ x], torch.ones(2, 2), uncast_keys=('masks', ))


def _stream(monkeypatch, uncast):
    monkeypatch.setattr(stream_module, 'MERGE_ONLY_OUTPUTS', uncast)
    seen = []

    def spy(**kwargs):
        seen.append({b.dtype for b in kwargs['mask_logits']})
        return merge_panoptic(**kwargs)

    monkeypatch.setattr(merge_module, 'merge_panoptic', spy)  # the detector's merge stage
    torch.manual_seed(0)
    model = build().eval()
    preds = []
    for t in range(3):
        sample = make_clip([make_frame(t, start=(t == 0))])
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            out = model.predict(dict(imgs=images(1, 1, seed=t)), [sample])
        pred = out[0].video_data_samples[0].pred_occ
        preds.append((pred.semantics.clone(), pred.instances.clone()))
    return preds, seen


def test_amp_stream_merges_autocast_dtype_logits_with_the_same_result(monkeypatch):
    low, seen_low = _stream(monkeypatch, stream_module.MERGE_ONLY_OUTPUTS)
    wide, seen_wide = _stream(monkeypatch, ())
    assert seen_low == [{torch.bfloat16}] * 3 and seen_wide == [{torch.float32}] * 3
    for (sem_a, ins_a), (sem_b, ins_b) in zip(low, wide):
        assert torch.equal(sem_a, sem_b) and torch.equal(ins_a, ins_b)
