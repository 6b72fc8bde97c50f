"""The fast path's CUDA graphs, emulated on the CPU (``RecordedGraph``), over a stream with
sequence starts and camera-rig changes: every encoder, the head and the merge replayed, the
rig-dependent graphs with stable outputs and captured at a new rig's first frame (or, with
fixed rig inputs, captured once for every rig), predictions equal to the eager stream and
every replay equal to its module run eagerly."""
import pytest
import torch
from torch.utils._pytree import tree_flatten

from trackocc.utils.cuda_graph import (BUDGET_GRAPH_MODULES, DETECTOR_GRAPH_MODULES,
                                      RIG_GRAPH_MODULES, graph_modules)

test_detector = pytest.importorskip('test_detector')
build_pair = pytest.importorskip('test_query_budget').build_pair

# (sequence, frames, camera yaw offset in degrees): a new rig at sequences 1 and 2, the first
# rig again at 3
STREAM = ((0, 4, 0.0), (1, 3, 20.0), (2, 3, 40.0), (3, 3, 0.0))


def frame(t, seq, yaw):
    """A tiny frame whose two cameras are turned by ``yaw`` degrees (another rig)."""
    out = test_detector.make_frame(t, seq=seq, start=(t == 0))
    cams = [test_detector.camera(yaw), test_detector.camera(90.0 + yaw)]
    cam2img = torch.stack([c[0] for c in cams])
    lidar2cam = torch.stack([c[1] for c in cams])
    aug = torch.as_tensor(out.metainfo['img_aug_matrix'])
    out.set_metainfo(dict(cam2img=cam2img.numpy(), lidar2cam=lidar2cam.numpy(),
                          lidar2img=(aug @ cam2img @ lidar2cam).numpy()))
    return out


def stream(model):
    preds = []
    for seq, num, yaw in STREAM:
        for t in range(num):
            sample = test_detector.make_clip([frame(t, seq, yaw)])
            with torch.no_grad():
                model.predict(dict(imgs=test_detector.images(1, 1, seed=10 * seq + t)),
                              [sample])
            pred = sample.video_data_samples[0].pred_occ
            preds.append((pred.semantics.clone(), pred.instances.clone()))
    return preds


# the tracking's graphs under fixed track rows: none, the memory bank and the query
# interaction, or the tracking as two graphs (carry, settle: the merge inside the latter)
TRACKING = {None: [], 'modules': ['memory_bank', 'query_interaction'],
            'carry': ['track_carry', 'track_settle']}


@pytest.mark.parametrize('rekey_warmup, tracking, rig_inputs', [
    (None, None, False), (0, None, False), (0, 'modules', False), (0, 'carry', False),
    (0, 'carry', True)])
def test_emulated_fast_path_equals_eager_across_rigs_and_sequences(rekey_warmup, tracking,
                                                                   rig_inputs):
    _, eager = build_pair()
    _, graphed = build_pair()
    graphed.fixed_track_rows = tracking is not None
    eager.fixed_rig_inputs = graphed.fixed_rig_inputs = rig_inputs
    wanted = list(DETECTOR_GRAPH_MODULES) + list(BUDGET_GRAPH_MODULES) + TRACKING[tracking]
    if tracking == 'carry':
        wanted.remove('panoptic_merge')
    names = graph_modules(graphed, wanted, stable_outputs=RIG_GRAPH_MODULES,
                          rekey_warmup=rekey_warmup, emulate=True)
    assert names == wanted
    for name in names:
        getattr(graphed, name).verify = True
    want, got = stream(eager), stream(graphed)
    mismatches = {n: getattr(graphed, n).mismatches for n in names}
    assert not any(mismatches.values()), mismatches
    for i, ((sem, inst), (sem_ref, inst_ref)) in enumerate(zip(got, want)):
        assert torch.equal(sem, sem_ref), f'frame {i}: semantics differ'
        assert torch.equal(inst, inst_ref), f'frame {i}: instances differ'
    assert any(bool((inst > 0).any()) for _, inst in want)  # tracks were output
    rig = {n: getattr(graphed, n) for n in RIG_GRAPH_MODULES}
    # three rigs, the first one twice: a capture at each change of rig, or with fixed rig
    # inputs one for all (the rigs fit the first one's padded sizes)
    assert all(m.captures == (1 if rig_inputs else 4) for m in rig.values()), {
        n: m.captures for n, m in rig.items()}
    if rig_inputs:
        assert all(m._rig.allocations == 1 for m in rig.values())
        for name, m in rig.items():  # the graph reads the rig's tensors where they lie
            read = {x.data_ptr() for x, alias in zip(m._captured.inputs, m._captured.aliased)
                    if alias}
            held = tree_flatten(m._rig.value)[0]
            assert held and all(x.data_ptr() in read for x in held), name
        assert graphed.occ_encoder._rig.value[1].order.shape[1] < 100  # padded, not to Q
    if rekey_warmup == 0:  # no eager call after the first rig's warm-up
        assert all(m.eager_calls == 2 for m in rig.values())
    # downstream of the stable outputs the graphs are captured once
    downstream = ['volume_encoder_backbone', 'pts_bbox_head'] + TRACKING[tracking] + (
        [] if tracking == 'carry' else ['panoptic_merge'])
    assert all(getattr(graphed, n).captures == 1 for n in downstream), {
        n: getattr(graphed, n).captures for n in downstream}
    frames = sum(num for _, num, _ in STREAM)  # each module runs once a frame
    assert all(getattr(graphed, n).replays + getattr(graphed, n).eager_calls == frames
               for n in names), {n: (getattr(graphed, n).replays, getattr(graphed, n).eager_calls)
                                 for n in names}
