"""AutocastWeights: conv / linear weights held in the autocast dtype during inference give the
same stream bit for bit as autocast's per-call casts, are restored afterwards, and a layer
called outside autocast fails loudly instead of computing in the wrong precision."""
import pytest
import torch
import torch.nn as nn

from trackocc.utils.autocast_weights import AutocastWeights
from trackocc.utils.cuda_graph import DETECTOR_GRAPH_MODULES

test_detector = pytest.importorskip('test_detector')

BF16 = torch.bfloat16
# the sub-networks the detector runs under autocast (autocast_scope='reference')
AUTOCAST_MODULES = DETECTOR_GRAPH_MODULES + ('pts_bbox_head', )


def stream_bf16(model, frames=((0, 3), (1, 2))):
    """Stream tiny frames under bf16 autocast; per frame the head's outputs at the merge, the
    track state and the predicted voxels."""
    records = []
    handle = model.register_merge_observer(lambda tracks, out: records.append(dict(
        obj_idxes=tracks.obj_idxes.clone(), scores=tracks.scores.clone(),
        cls=out['thing_cls'][-1][0].clone(), masks=out['thing_masks'][-1][0].clone(),
        stuff_masks=out['stuff_masks'][-1][0].clone())))
    try:
        for seq, num in frames:
            for t in range(num):
                sample = test_detector.make_clip(
                    [test_detector.make_frame(t, seq=seq, start=(t == 0))])
                imgs = test_detector.images(1, 1, seed=10 * seq + t)
                with torch.no_grad(), torch.autocast('cpu', dtype=BF16):
                    model.predict(dict(imgs=imgs), [sample])
                pred = sample.video_data_samples[0].pred_occ
                records[-1].update(semantics=pred.semantics, instances=pred.instances)
    finally:
        handle.remove()
    return records


@pytest.mark.parametrize('names', [AUTOCAST_MODULES, None])
def test_probed_layers_give_the_same_stream_bit_for_bit_and_are_restored(names):
    model = test_detector.build().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    want = stream_bf16(model)
    model.reset_tracks()
    held = AutocastWeights(model, BF16, names).probe(lambda: stream_bf16(model, ((2, 1), )))
    model.reset_tracks()
    with held:
        assert held.count > 10
        convs = [m for m in model.img_backbone.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(m.weight.dtype == BF16 for m in convs)
        # the depth net runs with autocast off: its layers keep float32
        assert model.img_view_transformer.depth_net.reduce_conv[0].weight.dtype == \
            torch.float32
        assert model.query_embedding.weight.dtype == torch.float32  # not a conv / linear
        got = stream_bf16(model)
    for t, (a, b) in enumerate(zip(got, want)):
        for key, value in b.items():
            assert torch.equal(a[key], value), f'frame {t}: {key} differs'
    restored = model.state_dict()
    for key, value in state.items():  # same tensors, same dtype, same values
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key


def test_without_probe_a_layer_outside_autocast_fails_loudly():
    model = test_detector.build().eval()
    with AutocastWeights(model, BF16, ['img_view_transformer']):
        with pytest.raises(RuntimeError, match='type'):
            stream_bf16(model, ((0, 1), ))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_outside_autocast_fails_loudly_and_training_is_refused():
    layer = nn.Linear(4, 3).eval()
    with AutocastWeights(layer, BF16):
        with torch.autocast('cpu', dtype=BF16):
            assert layer(torch.randn(2, 4)).dtype == BF16
        with pytest.raises(RuntimeError):  # float32 input, bf16 weight
            layer(torch.randn(2, 4))
    assert layer.weight.dtype == torch.float32
    with pytest.raises(RuntimeError, match='inference only'):
        with AutocastWeights(nn.Linear(2, 2).train(), BF16):
            pass
    with pytest.raises(ValueError, match='low-precision'):
        AutocastWeights(layer, torch.float32)


def test_entering_and_leaving_drop_the_graphs_that_read_the_weights():
    """A CUDA graph reads the weight tensors it was captured with: holding other tensors (and
    giving the old ones back) must make every wrapper in the module capture again."""
    from trackocc.utils.cuda_graph import CUDAGraphModule
    holder = nn.Module()
    holder.enc = CUDAGraphModule(nn.Linear(2, 2))
    holder.eval()
    held = AutocastWeights(holder, BF16)
    for step in (held.__enter__, lambda: held.__exit__(None, None, None)):
        holder.enc._captured, holder.enc._pending = 'graph', ('key', )
        step()
        assert holder.enc._captured is None and holder.enc._pending is None
