"""Sync-free inference path (panoptic merge, runtime tracker, memory bank, detector stream)
against the previous implementations that selected the kept rows first (copied below as the
references), and on CUDA: no host-device synchronisation (``set_sync_debug_mode('error')``)."""
import types

import pytest
import torch

from host_reads import no_device_waits
from trackocc.models.heads import merge_panoptic
from trackocc.models.trackers import MemoryBank, RuntimeTracker, build_empty_tracks

FREE = 15
E = 16


# -- previous implementations (references) ---------------------------------------------
def ref_merge(cls_logits, mask_logits, segment_ids, free_class, score_thresh=0.3,
              overlap_thresh=0.7):
    num_voxels = mask_logits.shape[1]
    device = mask_logits.device
    semantics = torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device)
    instances = torch.zeros(num_voxels, dtype=torch.int32, device=device)
    scores, labels = cls_logits.sigmoid().max(-1)
    keep = (labels != free_class) & (scores > score_thresh)
    if not keep.any():
        return semantics, instances
    scores, labels, ids = scores[keep], labels[keep], segment_ids[keep].to(device)
    probs = mask_logits[keep].sigmoid()
    winner = (scores[:, None] * probs).argmax(0)
    own = probs >= 0.5
    won_area = torch.bincount(winner, minlength=len(scores))
    own_area = own.sum(1)
    in_own = own.gather(0, winner[None])[0]
    kept_area = torch.bincount(winner[in_own], minlength=len(scores))
    ratio = won_area.double() / own_area.clamp(min=1).double()
    valid = (won_area > 0) & (own_area > 0) & (kept_area > 0) & (ratio >= overlap_thresh)
    take = in_own & valid[winner]
    semantics[take] = labels[winner[take]].to(torch.int32)
    instances[take] = ids[winner[take]].to(torch.int32)
    return semantics, instances


class RefTracker(RuntimeTracker):

    def reset(self):
        self.max_obj_id = 0

    @torch.no_grad()
    def update(self, tracks):
        scores = tracks.scores
        obj_idxes = tracks.obj_idxes
        confident = scores >= self.score_thresh
        born = (obj_idxes == -1) & confident
        missed = (obj_idxes >= 0) & (scores < self.filter_score_thresh)
        tracks.disappear_time[confident] = 0
        num_born = int(born.sum())
        if num_born:
            obj_idxes[born] = torch.arange(
                self.max_obj_id, self.max_obj_id + num_born, device=obj_idxes.device)
            self.max_obj_id += num_born
        tracks.disappear_time[missed] += 1
        obj_idxes[missed & (tracks.disappear_time >= self.miss_tolerance)] = -1
        return tracks


def ref_temporal_attention(self, tracks):
    # the previous code indexed the (n, 1, E) attention output with [0] (mmcv's
    # MultiheadAttention returns a tensor, not a tuple): every valid track got one scalar.
    # This reference attends per track, as the fixed module does.
    if len(tracks) == 0:
        return tracks
    valid = ~tracks.mem_padding_mask[:, -1]
    if not valid.any():
        return tracks
    embed = tracks.output_embedding[valid][:, None]
    memory = tracks.mem_bank[valid]
    embed = self.norm1(self.temporal_attn(
        embed, memory, memory, key_padding_mask=tracks.mem_padding_mask[valid]))
    embed = self.norm2(self.ffn(embed))[:, 0]
    out = tracks.output_embedding.clone()
    out[valid] = embed
    tracks.output_embedding = out
    return tracks


def ref_save(self, tracks):
    if len(tracks) == 0:
        return tracks
    if self.training:
        saving = tracks.scores > 0
    else:
        period = tracks.save_period
        saving = (period == 0) & (tracks.scores > self.save_score_thresh)
        period[period > 0] -= 1
        period[saving] = self.save_period
    if not saving.any():
        return tracks
    new = self.save_proj(tracks.output_embedding[saving])[:, None]
    bank = tracks.mem_bank.clone()
    bank[saving] = torch.cat([bank[saving][:, 1:], new], dim=1)
    tracks.mem_bank = bank
    pad = tracks.mem_padding_mask.clone()
    pad[saving] = torch.cat([pad[saving][:, 1:], pad.new_zeros(int(saving.sum()), 1)], dim=1)
    tracks.mem_padding_mask = pad
    return tracks


def ref_bank(bank):
    """``bank`` running the previous temporal attention and save."""
    bank.temporal_attention = types.MethodType(ref_temporal_attention, bank)
    bank.save = types.MethodType(ref_save, bank)
    return bank


# -- panoptic merge --------------------------------------------------------------------
def random_merge_inputs(gen, num, voxels=200, quantize=False, device='cpu'):
    cls = torch.randn(num, 16, generator=gen) * 3
    masks = torch.randn(num, voxels, generator=gen) * 4
    if quantize:  # many exact ties of score * prob, also at 0 (prob of -inf is 0)
        cls = cls.round()
        masks = torch.where(torch.rand(num, voxels, generator=gen) < 0.3,
                            torch.full_like(masks, -float('inf')), masks.round())
    ids = torch.randint(0, 50, (num, ), generator=gen)
    return cls.to(device), masks.to(device), ids.to(device)


def assert_same_merge(got, want):
    assert got[0].dtype == torch.int32 and got[1].dtype == torch.int32
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize('quantize', [False, True])
def test_merge_matches_previous_on_random_inputs(quantize):
    gen = torch.Generator().manual_seed(1)
    for trial in range(40):
        num = int(torch.randint(1, 14, (1, ), generator=gen))
        cls, masks, ids = random_merge_inputs(gen, num, quantize=quantize)
        for score_thresh, overlap in ((0.3, 0.7), (0.05, 0.3), (0.6, 0.95)):
            assert_same_merge(merge_panoptic(cls, masks, ids, FREE, score_thresh, overlap),
                              ref_merge(cls, masks, ids, FREE, score_thresh, overlap))


def test_merge_ties_pick_first_kept_row():
    cls = torch.full((4, 16), -10.0)
    cls[:, 3] = 5.0  # equal scores
    cls[0, FREE] = 9.0  # row 0 is free: dropped
    masks = torch.full((4, 6), 2.0)
    masks[:, 4:] = -float('inf')  # every score * prob is 0 on voxels 4, 5
    ids = torch.tensor([1, 2, 3, 4])
    for overlap in (0.0, 0.7):
        got = merge_panoptic(cls, masks, ids, FREE, 0.3, overlap)
        assert_same_merge(got, ref_merge(cls, masks, ids, FREE, 0.3, overlap))
    # overlap 0: the first kept row (1) wins every voxel, and keeps those of its own mask
    got = merge_panoptic(cls, masks, ids, FREE, 0.3, 0.0)
    assert got[1].tolist() == [2, 2, 2, 2, 0, 0]


def test_merge_nothing_kept_and_empty_inputs():
    gen = torch.Generator().manual_seed(2)
    cls, masks, ids = random_merge_inputs(gen, 5)
    cls[:, FREE] = 20.0  # all free
    assert_same_merge(merge_panoptic(cls, masks, ids, FREE), ref_merge(cls, masks, ids, FREE))
    sem, inst = merge_panoptic(cls[:0], masks[:0], ids[:0], FREE)
    assert sem.tolist() == [FREE] * masks.shape[1] and inst.tolist() == [0] * masks.shape[1]
    sem, inst = merge_panoptic(cls, masks[:, :0], ids, FREE)
    assert sem.shape == (0, ) and inst.shape == (0, )
    with pytest.raises(ValueError, match='differ'):
        merge_panoptic(cls, masks[:3], ids, FREE)


def test_merge_valid_equals_merging_the_valid_rows():
    gen = torch.Generator().manual_seed(3)
    for trial in range(30):
        num = int(torch.randint(1, 14, (1, ), generator=gen))
        cls, masks, ids = random_merge_inputs(gen, num, quantize=bool(trial % 2))
        valid = torch.rand(num, generator=gen) < 0.6
        masks[~valid] = float('nan')  # never read for excluded rows
        got = merge_panoptic(cls, masks, ids, FREE, 0.3, 0.7, valid=valid)
        assert_same_merge(got, ref_merge(cls[valid], masks[valid], ids[valid], FREE, 0.3, 0.7))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_merge_half_logits_use_float32_probabilities(dtype):
    gen = torch.Generator().manual_seed(4)
    for _ in range(10):
        cls, masks, ids = random_merge_inputs(gen, 9)
        cls, masks = cls.to(dtype), masks.to(dtype)
        assert_same_merge(merge_panoptic(cls, masks, ids, FREE),
                          ref_merge(cls.float(), masks.float(), ids, FREE))


# -- runtime tracker -------------------------------------------------------------------
def make_tracks(num, memory_len=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tracks = build_empty_tracks(torch.randn(num, 2 * E, generator=gen),
                                torch.randn(num, 3, generator=gen), 16, memory_len=memory_len)
    tracks.output_embedding = torch.randn(num, E, generator=gen)
    return tracks


def test_runtime_tracker_matches_previous_over_a_stream():
    gen = torch.Generator().manual_seed(5)
    new, ref = RuntimeTracker(0.3, 0.25, 3), RefTracker(0.3, 0.25, 3)
    for seq in range(3):
        new.reset()
        ref.reset()
        a, b = make_tracks(8), make_tracks(8)
        for frame in range(12):
            scores = torch.rand(len(a), generator=gen) ** 2
            a.scores, b.scores = scores.clone(), scores.clone()
            new.update(a)
            ref.update(b)
            assert torch.equal(a.obj_idxes, b.obj_idxes)
            assert torch.equal(a.disappear_time, b.disappear_time)
            assert int(new.max_obj_id) == ref.max_obj_id
            # next frame: the live tracks after fresh queries (as the query interaction does)
            fresh_a, fresh_b = make_tracks(4, seed=frame), make_tracks(4, seed=frame)
            a = type(a).cat([fresh_a, a[a.obj_idxes >= 0]])
            b = type(b).cat([fresh_b, b[b.obj_idxes >= 0]])
    assert isinstance(new.max_obj_id, torch.Tensor) and new.max_obj_id.dim() == 0


def test_runtime_tracker_reset_and_python_counter():
    tracker = RuntimeTracker()
    assert int(tracker.max_obj_id) == 0
    tracks = make_tracks(3)
    tracks.scores = torch.tensor([0.9, 0.1, 0.8])
    tracker.update(tracks)
    assert tracks.obj_idxes.tolist() == [0, -1, 1] and int(tracker.max_obj_id) == 2
    tracker.max_obj_id = 7  # set from Python: still counts on
    fresh = make_tracks(2)
    fresh.scores = torch.tensor([0.5, 0.5])
    tracker.update(fresh)
    assert fresh.obj_idxes.tolist() == [7, 8] and int(tracker.max_obj_id) == 9
    tracker.reset()
    empty = make_tracks(0)
    tracker.update(empty)
    assert int(tracker.max_obj_id) == 0


# -- memory bank -----------------------------------------------------------------------
def random_memory(tracks, gen):
    num, length = tracks.mem_padding_mask.shape
    filled = torch.randint(0, length + 1, (num, ), generator=gen)  # newest slots filled
    tracks.mem_padding_mask = torch.arange(length)[None] < (length - filled)[:, None]
    tracks.mem_bank = torch.randn(num, length, E, generator=gen) * \
        (~tracks.mem_padding_mask)[..., None]
    tracks.save_period = torch.randint(0, 3, (num, ), generator=gen).float()
    tracks.scores = torch.rand(num, generator=gen)
    return tracks


def clone_tracks(tracks):
    out = type(tracks)()
    for k, v in tracks.items():
        out[k] = v.clone()
    return out


def assert_same_tracks(a, b, atol=0.0):
    for k in a.keys():
        x, y = a[k], b[k]
        if x.is_floating_point() and atol:
            assert torch.allclose(x, y, rtol=0, atol=atol), k
        else:
            assert torch.equal(x, y), k


@pytest.mark.parametrize('training', [False, True])
def test_memory_bank_matches_previous(training):
    torch.manual_seed(0)
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2, save_period=2)
    ref = ref_bank(MemoryBank(embed_dims=E, memory_len=3, num_heads=2, save_period=2))
    ref.load_state_dict(bank.state_dict())
    bank.train(training)
    ref.train(training)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for trial in range(6):
            tracks = random_memory(make_tracks(7, memory_len=3, seed=trial), gen)
            if trial == 0:  # nothing in memory: no attention, nothing saved
                tracks.mem_padding_mask[:] = True
                tracks.scores[:] = 0
            a, b = clone_tracks(tracks), clone_tracks(tracks)
            for frame in range(4):  # a few frames: saving, period countdown, attention
                a, b = bank(a), ref(b)
                # training runs the previous code; inference differs only by the row count
                # of the matrix products (last bits)
                assert_same_tracks(a, b, atol=0.0 if training else 1e-5)
                assert torch.isfinite(a.output_embedding).all()
                a.scores = b.scores = torch.rand(len(a), generator=gen)


def test_memory_bank_training_gradients_unchanged():
    torch.manual_seed(0)
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2).train()
    ref = ref_bank(MemoryBank(embed_dims=E, memory_len=3, num_heads=2).train())
    ref.load_state_dict(bank.state_dict())
    gen = torch.Generator().manual_seed(7)
    tracks = random_memory(make_tracks(6, memory_len=3), gen)
    for module in (bank, ref):
        t = clone_tracks(tracks)
        module(t).output_embedding.sum().backward()
    for (name, p), q in zip(bank.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize('training', [False, True])
def test_memory_bank_attends_per_track(training):
    """Each track attends to its own memory: its refined embedding is the one it gets alone
    (regression: all tracks used to get one scalar, the first output element)."""
    torch.manual_seed(0)
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2).train(training)
    gen = torch.Generator().manual_seed(8)
    tracks = random_memory(make_tracks(6, memory_len=3), gen)
    tracks.mem_padding_mask[:4, -1] = False  # tracks 0-3 have memory, 4-5 none
    tracks.mem_padding_mask[4:] = True
    with torch.no_grad():
        out = bank.temporal_attention(clone_tracks(tracks)).output_embedding
        for k in range(6):
            alone = bank.temporal_attention(clone_tracks(tracks[k:k + 1])).output_embedding
            assert torch.allclose(out[k], alone[0], atol=1e-5)
    assert torch.equal(out[4:], tracks.output_embedding[4:])
    assert not torch.allclose(out[0], out[1]) and out[:4].std(1).min() > 0.1


def test_memory_bank_empty_tracks():
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2).eval()
    out = bank(make_tracks(0, memory_len=3))
    assert len(out) == 0


# -- detector stream -------------------------------------------------------------------
def test_predict_stream_matches_previous_implementation():
    """The tiny detector of test_detector.py streams frames with the new and the previous
    tracker / memory bank / merge / ego alignment; the outputs agree."""
    test_detector = pytest.importorskip('test_detector')
    from mmengine.structures import BaseDataElement

    from trackocc.models.trackers import (align_ref_points, inverse_sigmoid,
                                          relative_ego_transform)

    new = test_detector.build().eval()
    old = test_detector.build().eval()
    old.load_state_dict(new.state_dict())
    for model in (new, old):
        with torch.no_grad():  # most queries confidently predict "vehicle", a few not
            model.pts_bbox_head.cls_embed.bias.fill_(-8.0)
            model.pts_bbox_head.cls_embed.bias[1] = 1.0
    old.tracker = RefTracker(old.tracker.score_thresh, old.tracker.filter_score_thresh,
                             old.tracker.miss_tolerance)
    ref_bank(old.memory_bank)
    align_calls = []

    def old_merge(self, tracks, out):
        live = (tracks.obj_idxes >= 0) & (tracks.scores >= self.tracker.filter_score_thresh)
        cls = torch.cat([out['thing_cls'][-1][0][live], out['stuff_cls'][-1][0]])
        masks = torch.cat([out['thing_masks'][-1][0][live].flatten(1),
                           out['stuff_masks'][-1][0].flatten(1)])
        ids = torch.cat([tracks.obj_idxes[live] + 1,
                         tracks.obj_idxes.new_zeros(out['stuff_cls'][-1].shape[1])])
        return ref_merge(cls, masks, ids, self.num_classes - 1, self.score_threshold,
                         self.overlap_threshold)

    def old_predict(self, inputs, data_samples):
        imgs = inputs['imgs']
        frame = data_samples[0].video_data_samples[0]
        meta = frame.metainfo
        ego2global = meta['ego2global']
        state = self._test_state
        if meta.get('start_of_sequence', False) or state is None or \
                state['sequence_id'] != meta.get('sequence_id'):
            tracks = self._empty_tracks()
            self.tracker.reset()
        else:
            tracks = state['tracks']
            active = tracks.obj_idxes >= 0
            if active.any():
                prev2curr = relative_ego_transform(state['ego2global'], ego2global)
                ref = tracks.ref_pts.float()
                ref[active] = align_ref_points(
                    ref[active], prev2curr, self.pc_range,
                    self._velocity(tracks.pred_centers[active]), self.time_interval)
                tracks.ref_pts = ref
                align_calls.append(int(active.sum()))
        feats = self.extract_feat(imgs[:, 0], [meta])
        out = self._run_head(tracks, feats['compact_occ'], feats['mask_features'])
        self._record_frame(tracks, out)
        tracks.ref_pts = inverse_sigmoid(out['thing_ref_pts'][0].float())
        self.tracker.update(tracks)
        semantics, instances = self._merge(tracks, out)
        tracks = self.memory_bank(tracks)
        tracks = self.query_interaction(tracks, self._empty_tracks())
        self._test_state = dict(tracks=tracks, ego2global=ego2global,
                                sequence_id=meta.get('sequence_id'))
        frame.pred_occ = BaseDataElement(
            semantics=semantics.view(self.occ_size).to(torch.uint8),
            instances=instances.view(self.occ_size))
        return data_samples

    old._merge = types.MethodType(old_merge, old)
    old.predict = types.MethodType(old_predict, old)

    seen_ids = set()
    for seq, frames in ((0, 4), (1, 2)):
        for t in range(frames):
            outs = []
            for predict in (new.predict, old.predict):
                sample = test_detector.make_clip([test_detector.make_frame(t, seq=seq,
                                                                           start=(t == 0))])
                with torch.no_grad():
                    predict(dict(imgs=test_detector.images(1, 1, seed=10 * seq + t)),
                            [sample])
                outs.append(sample.video_data_samples[0].pred_occ)
            assert torch.equal(outs[0].semantics, outs[1].semantics)
            assert torch.equal(outs[0].instances, outs[1].instances)
            a, b = new._test_state.next_queries(), old._test_state['tracks']
            assert torch.equal(a.obj_idxes, b.obj_idxes)
            assert torch.allclose(a.ref_pts, b.ref_pts, atol=1e-5)
            assert torch.allclose(a.query, b.query, atol=1e-4)
            seen_ids |= set(outs[0].instances.unique().tolist())
    assert align_calls and len(seen_ids) > 1  # tracks were carried and written


# -- CUDA: no host-device synchronisation ----------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_merge_and_tracker_do_not_sync():
    gen = torch.Generator().manual_seed(8)
    inputs = [random_merge_inputs(gen, n, voxels=5000, quantize=q, device='cuda')
              for n, q in ((12, False), (12, True), (3, False))]
    inputs[2][0][:, FREE] = 20.0  # nothing kept
    valid = torch.rand(12, generator=gen).cuda() < 0.5
    tracker, ref_tracker = RuntimeTracker(), RefTracker()
    streams = [make_tracks(10).to('cuda') for _ in range(2)]
    score_seq = [torch.rand(10, generator=gen).cuda() for _ in range(5)]
    results = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for cls, masks, ids in inputs:
            results.append(merge_panoptic(cls, masks, ids, FREE))
            results.append(merge_panoptic(cls.half(), masks.bfloat16(), ids, FREE))
        cls, masks, ids = inputs[0]
        results.append(merge_panoptic(cls, masks, ids, FREE, valid=valid))
        ids_seq = []
        for scores in score_seq:
            streams[0].scores = scores
            tracker.update(streams[0])
            ids_seq.append(streams[0].obj_idxes.clone())
    finally:
        torch.cuda.set_sync_debug_mode('default')
    for k, (cls, masks, ids) in enumerate(inputs):
        assert_same_merge(results[2 * k], ref_merge(cls, masks, ids, FREE))
        assert_same_merge(results[2 * k + 1],
                          ref_merge(cls.half().float(), masks.bfloat16().float(), ids, FREE))
    cls, masks, ids = inputs[0]
    assert_same_merge(results[-1], ref_merge(cls[valid], masks[valid], ids[valid], FREE))
    for scores, want_ids in zip(score_seq, ids_seq):
        streams[1].scores = scores
        ref_tracker.update(streams[1])
        assert torch.equal(streams[1].obj_idxes, want_ids)
    assert tracker.max_obj_id.is_cuda and int(tracker.max_obj_id) == ref_tracker.max_obj_id


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_memory_bank_inference_does_not_sync():
    torch.manual_seed(0)
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2, save_period=2).cuda().eval()
    ref = ref_bank(MemoryBank(embed_dims=E, memory_len=3, num_heads=2, save_period=2))
    ref.load_state_dict(bank.state_dict())
    ref = ref.cuda().eval()
    gen = torch.Generator().manual_seed(9)
    tracks = random_memory(make_tracks(9, memory_len=3), gen).to('cuda')
    a, b = clone_tracks(tracks), clone_tracks(tracks)
    with torch.no_grad():
        for frame in range(3):
            with no_device_waits():
                a = bank(a)
            b = ref(b)
            assert_same_tracks(a, b, atol=1e-5)
