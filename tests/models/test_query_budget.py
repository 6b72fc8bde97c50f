"""Fixed query budget at inference (``TrackOcc.query_budget``): the head gets the thing queries
padded to a fixed number of rows with a validity mask (fixed shapes, e.g. for a CUDA graph).

The padded head runs other shapes than the unpadded one (longer self-attention rows, more
matrix rows), so its float outputs may differ in the last bits: they are compared with a
tolerance, and the integer outputs exactly only where the two float paths are bit-identical
(see :func:`assert_same_frames`). Padding rows filled with garbage instead of zeros run the same
shapes, and the padding is masked, so there the valid outputs must not change at all."""
import pytest
import torch

from trackocc.models.heads import TrackOccHead, merge_panoptic

test_detector = pytest.importorskip('test_detector')

BUDGET = 40  # 6 fresh queries + up to 34 live tracks: the 4-frame stream below needs 24


def build_pair(budget=BUDGET):
    """Two tiny detectors with the same random weights: no budget, and ``budget``."""
    plain = test_detector.build().eval()
    padded = test_detector.build().eval()
    padded.load_state_dict(plain.state_dict())
    padded.query_budget = budget
    return plain, padded


def stream(model, frames=((0, 4), (1, 2))):
    """Stream the tiny frames; per frame the tracker's and head's outputs after the merge,
    and the thing-query row counts the head was called with."""
    records, head_rows = [], []
    model.register_merge_observer(lambda tracks, out: records.append(dict(
        obj_idxes=tracks.obj_idxes.clone(), scores=tracks.scores.clone(),
        ref_pts=tracks.ref_pts.clone(), cls=out['thing_cls'][-1][0].clone(),
        masks=out['thing_masks'][-1][0].clone(), centers=out['thing_centers'][-1][0].clone(),
        embed=out['thing_embed'][0].clone(), stuff_masks=out['stuff_masks'][-1][0].clone())))
    model.pts_bbox_head.register_forward_pre_hook(
        lambda _, args: head_rows.append(args[0].shape[1]))
    for seq, num in frames:
        for t in range(num):
            sample = test_detector.make_clip([test_detector.make_frame(t, seq=seq,
                                                                       start=(t == 0))])
            with torch.no_grad():
                model.predict(dict(imgs=test_detector.images(1, 1, seed=10 * seq + t)),
                              [sample])
            pred = sample.video_data_samples[0].pred_occ
            records[-1].update(semantics=pred.semantics, instances=pred.instances)
    return records, head_rows


FLOATS = ('scores', 'ref_pts', 'cls', 'masks', 'centers', 'embed', 'stuff_masks')


def assert_same_frames(got, want, atol=1e-4):
    """Same track ids; float outputs within ``atol`` (relative to 1 + |value|); semantics and
    instance ids exactly when every float output of the frame is bit-identical, else on all
    but 1 % of the voxels (a last-bit difference may flip a near-tie of the merge)."""
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a['obj_idxes'], b['obj_idxes']), f'frame {t}: track ids differ'
        for key in FLOATS:
            torch.testing.assert_close(a[key], b[key], rtol=atol, atol=atol,
                                       msg=lambda m: f'frame {t} {key}: {m}')
        if all(torch.equal(a[key], b[key]) for key in FLOATS):
            assert torch.equal(a['semantics'], b['semantics']), f'frame {t}'
            assert torch.equal(a['instances'], b['instances']), f'frame {t}'
        else:
            for key in ('semantics', 'instances'):
                same = (a[key] == b[key]).float().mean()
                assert same >= 0.99, f'frame {t} {key}: only {float(same):.3f} equal'


def assert_scores_clear_of_thresholds(records, tracker, margin=1e-3):
    """Track births / misses must not hang on a last-bit difference of a score."""
    scores = torch.cat([r['scores'] for r in records])
    for thresh in (tracker.score_thresh, tracker.filter_score_thresh):
        assert (scores - thresh).abs().min() > margin, 'a score is at a tracker threshold'


def test_budget_stream_equals_unbudgeted_stream():
    plain, padded = build_pair()
    want, plain_rows = stream(plain)
    got, padded_rows = stream(padded)
    assert_scores_clear_of_thresholds(want, plain.tracker)
    assert_same_frames(got, want)
    # the head always ran on BUDGET rows; without a budget the row count changed with the
    # live tracks (tracks were carried, and the budget was used well beyond the fresh queries)
    assert set(padded_rows) == {BUDGET}
    assert len(set(plain_rows)) > 1 and max(plain_rows) > 3 * plain.num_thing_queries
    assert [len(r['obj_idxes']) for r in got] == plain_rows
    assert len(torch.cat([r['instances'].unique() for r in want]).unique()) > 1  # ids written


ROW_FIELDS = ('obj_idxes', 'scores', 'ref_pts', 'cls', 'masks', 'centers', 'embed')


@pytest.mark.parametrize('alignment', ['all_live', 'reference'])
def test_fixed_track_rows_stream_equals_budget_stream(alignment):
    """fixed_track_rows: the tracks keep BUDGET rows (fresh queries, carried tracks, filler);
    the tracks' rows come first, in the same order, with the same ids and outputs (up to the
    last bits: the query interaction and memory bank run on more rows), and the filler rows
    are never born, output or attended to."""
    _, padded = build_pair()
    _, fixed = build_pair()
    for model in (padded, fixed):
        model.track_alignment = alignment
    fixed.fixed_track_rows = True
    want, _ = stream(padded)
    got, fixed_rows = stream(fixed)
    assert set(fixed_rows) == {BUDGET}
    rows = []
    for record, ref in zip(got, want):
        num = len(ref['obj_idxes'])
        rows.append(dict(record, **{k: record[k][:num] for k in ROW_FIELDS}))
        assert len(record['obj_idxes']) == BUDGET  # the tracks themselves kept BUDGET rows
        assert (record['obj_idxes'][num:] == -1).all()  # filler: no id
        assert (record['scores'][num:] == 0).all()  # never born nor output
    assert_same_frames(rows, want)
    assert max(len(r['obj_idxes']) for r in want) > 2 * padded.num_thing_queries


def test_fixed_track_rows_switched_on_mid_stream():
    """Turned on between two frames of a sequence, the carried tracks are padded to the budget
    from the next frame on; the stream stays the budget stream."""
    _, padded = build_pair()
    _, switched = build_pair()
    frames = []
    switched.register_merge_observer(
        lambda tracks, out: (frames.append(len(tracks)),
                             setattr(switched, 'fixed_track_rows', len(frames) >= 2)))
    want, _ = stream(padded)
    got, _ = stream(switched)
    assert frames[0] < BUDGET and frames[1] < BUDGET and set(frames[2:]) == {BUDGET}
    rows = [dict(r, **{k: r[k][:len(w['obj_idxes'])] for k in ROW_FIELDS})
            for r, w in zip(got, want)]
    assert_same_frames(rows, want)


def _eager_ops_outside(model, modules, frames=((0, 5), )):
    """ATen ops dispatched per frame outside calls of the named sub-modules (those a fast
    path replays as CUDA graphs), over the frames after the second of the stream."""
    from torch.utils._python_dispatch import TorchDispatchMode
    depth = [0]
    handles = []
    for name in modules:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(
            lambda *_: depth.__setitem__(0, depth[0] + 1)))
        handles.append(module.register_forward_hook(
            lambda *_: depth.__setitem__(0, depth[0] - 1)))

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += depth[0] == 0
            return func(*args, **(kwargs or {}))

    per_frame = []
    for seq, num in frames:
        for t in range(num):
            sample = test_detector.make_clip([test_detector.make_frame(t, seq=seq,
                                                                       start=(t == 0))])
            imgs = test_detector.images(1, 1, seed=10 * seq + t)
            before = Count.ops
            with torch.no_grad(), Count():
                model.predict(dict(imgs=imgs), [sample])
            if t >= 2:
                per_frame.append(Count.ops - before)
    for handle in handles:
        handle.remove()
    return per_frame


@pytest.mark.parametrize('alignment', ['all_live', 'reference'])
def test_fixed_track_rows_carry_the_tracks_in_one_call(alignment):
    """With fixed rows every frame carries its tracks in one call of ``track_carry`` (the
    memory bank and query interaction inside it; a sequence start from blank rows, so what
    reads the carried tracks always reads its output; the same stream), which takes the glue
    between them and the ego alignment along: fewer ops outside the graphable calls than with
    the memory bank and the query interaction graphed on their own."""
    _, fixed = build_pair()
    fixed.track_alignment = alignment
    fixed.fixed_track_rows = True
    calls = {name: 0 for name in ('track_carry', 'memory_bank', 'query_interaction',
                                  'track_settle', 'panoptic_merge')}
    for name in calls:
        getattr(fixed, name).register_forward_hook(
            lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    stream(fixed)  # sequences of 4 and 2 frames, each start carried from blank rows
    assert set(calls.values()) == {6}, calls
    graphed = ['img_backbone', 'img_neck', 'img_view_transformer', 'volume_encoder_backbone',
               'volume_encoder_neck', 'occ_encoder', 'pts_bbox_head', 'panoptic_merge']
    _, model = build_pair()
    model.track_alignment = alignment
    model.fixed_track_rows = True
    separately = _eager_ops_outside(model, graphed + ['memory_bank', 'query_interaction'])
    carried = _eager_ops_outside(model, graphed + ['track_carry'])
    settled = _eager_ops_outside(model, graphed + ['track_carry', 'track_settle'])
    for ops in (separately, carried, settled):  # the same work every frame
        assert len(set(ops)) == 1, ops
    assert carried[0] <= separately[0] - 20, (carried, separately)
    assert settled[0] <= carried[0] - 20, (settled, carried)


@pytest.mark.parametrize('alignment', ['all_live', 'reference'])
def test_tracking_steps_see_one_signature_across_sequences(alignment):
    """Every call of ``track_carry`` and of ``track_settle`` has the same argument structure,
    shapes, dtypes, strides and values of the non-tensor arguments, sequence starts (blank
    rows) included: a CUDA graph of each is captured once."""
    from torch.utils._pytree import tree_flatten
    from trackocc.utils.cuda_graph import to_tree
    _, model = build_pair()
    model.track_alignment = alignment
    model.fixed_track_rows = True
    seen = {'track_carry': set(), 'track_settle': set()}

    def record(name):
        def hook(module, args, kwargs):
            leaves, spec = tree_flatten(to_tree((args, kwargs)))
            seen[name].add((str(spec), ) + tuple(
                (tuple(x.shape), x.dtype, x.stride()) if isinstance(x, torch.Tensor) else x
                for x in leaves))
        return hook

    for name in seen:
        getattr(model, name).register_forward_pre_hook(record(name), with_kwargs=True)
    stream(model)
    assert {name: len(sigs) for name, sigs in seen.items()} == dict(track_carry=1,
                                                                     track_settle=1)


def test_tracking_steps_are_outside_the_module_tree():
    """``track_carry`` / ``track_settle`` have no parameters and add nothing to the state
    dict; a deep copy of the detector (FastInferenceHook's) runs its steps on the copy."""
    import copy
    model = test_detector.build().eval()
    twin = copy.deepcopy(model)
    for name in ('track_carry', 'track_settle'):
        assert list(getattr(model, name).parameters()) == []
        assert not any(k.startswith(name) for k in model.state_dict())
        assert getattr(twin, name)._detector[0] is twin


def test_track_settle_returns_new_tensors_only():
    """The settling step copies the tracks it gets before recording and updating them: none of
    its outputs is, or shares memory with, the given tracks or next free id (a graph of it
    never writes into, nor hands on, the carried tracks' graph output that it reads in place;
    the recorded head outputs are views of the head's)."""
    _, model = build_pair()
    model.fixed_track_rows = True
    seen = []

    def keep(module, args, output):
        inputs = [args[0].get(k) for k in args[0].keys()] + [args[2]]
        given = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        tracks, semantics, instances, max_obj_id = output
        got = [tracks.get(k) for k in tracks.keys()] + [semantics, instances, max_obj_id]
        seen.append(given & {t.untyped_storage().data_ptr() for t in got
                             if isinstance(t, torch.Tensor)})
        before = args[0].obj_idxes
        assert before is not tracks.obj_idxes

    model.track_settle.register_forward_hook(keep)
    stream(model, frames=((0, 3), ))
    assert len(seen) == 3 and not any(seen), seen


def test_fixed_track_rows_needs_a_budget_and_keeps_the_budget_check():
    model = test_detector.build().eval()
    with pytest.raises(ValueError, match='fixed_track_rows needs a query_budget'):
        model.fixed_track_rows = True
    model.query_budget = 40
    model.fixed_track_rows = True
    with pytest.raises(ValueError, match='turn it off first'):
        model.query_budget = None
    _, fixed = build_pair(budget=test_detector.NUM_QUERIES + 2)
    fixed.fixed_track_rows = True
    with pytest.raises(RuntimeError, match=r'12 thing queries \(6 fresh \+ 6 live tracks\) '
                       r'exceed query_budget=8'):
        stream(fixed, frames=((0, 2), ))


def test_budget_merge_runs_on_the_padded_rows_with_the_same_result():
    """Under a budget the merge gets the head's budget rows (fixed shapes), the padding not
    valid: exactly the merge of the sliced rows."""
    _, padded = build_pair()
    outputs = []

    def check(tracks, out):
        assert out['budget_thing_cls'].shape[1] == out['budget_thing_masks'].shape[1] == BUDGET
        got = padded.panoptic_merge(**padded.merge_inputs(tracks, out, budget=True))
        want = merge_panoptic(**padded.merge_inputs(tracks, out))
        assert len(padded.merge_inputs(tracks, out)['valid']) < BUDGET  # rows were padded
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        outputs.append(want)

    padded.register_merge_observer(check)
    records, _ = stream(padded)
    assert len(outputs) == len(records) == 6
    for (sem, inst), frame in zip(outputs, records):  # and that is what the frames got
        assert torch.equal(sem.view(frame['semantics'].shape).to(torch.uint8),
                           frame['semantics'])
        assert torch.equal(inst.view(frame['instances'].shape), frame['instances'])
    assert any(bool((frame['instances'] > 0).any()) for frame in records)


def graphs_of_head_and_merge_equal_eager(fixed, device):
    """Under a budget the head and the merge replay as graphs (the merge reading the head's
    mask logits in place) and give the eager frames; with fixed track rows also the memory
    bank and the query interaction (TrackInstances in and out), or the whole tracking as two
    graphs (``'carry'``: ``track_carry``, them and the ego alignment; ``track_settle``, the
    tracker's update and the merge). The frames' outputs are copies that the next replay does
    not overwrite. On a CPU the graphs are emulated (``RecordedGraph``)."""
    from trackocc.utils.cuda_graph import graph_modules

    def run(model):
        preds = []
        for seq, num in ((0, 5), (1, 3)):
            for t in range(num):
                sample = test_detector.make_clip([test_detector.make_frame(
                    t, seq=seq, start=(t == 0))])
                with torch.no_grad():
                    model.predict(dict(imgs=test_detector.images(1, 1, seed=10 * seq + t)
                                       .to(device)), [sample])
                preds.append(sample.video_data_samples[0].pred_occ)
        return [(p.semantics.cpu(), p.instances.cpu(), p.instances) for p in preds]

    _, eager = build_pair()
    _, graphed = build_pair()
    graphed.fixed_track_rows = bool(fixed)
    want = run(eager.to(device))
    tracking = ['track_carry', 'track_settle'] if fixed == 'carry' else \
        ['memory_bank', 'query_interaction'] if fixed else []
    merge = [] if fixed == 'carry' else ['panoptic_merge']  # inside track_settle then
    names = graph_modules(graphed.to(device), ['pts_bbox_head'] + merge + tracking,
                          emulate=device == 'cpu')
    for name in names:  # each replay against the module run eagerly on the same arguments
        getattr(graphed, name).verify = True
    got = run(graphed)
    mismatches = {n: getattr(graphed, n).mismatches for n in names}
    # (replay, output, max abs difference): a graph that computes another thing than its
    # module on the same arguments
    wrong = [(name, m) for name, found in mismatches.items() for m in found
             if isinstance(m[2], str) or m[2] > 1e-4]
    assert not wrong, mismatches
    assert graphed.pts_bbox_head.replays >= 3
    for name in merge:
        assert graphed.panoptic_merge.replays >= 3 and graphed.panoptic_merge.aliased_inputs == 2
    for name in tracking:  # one shape: captured once per sequence start at most
        assert getattr(graphed, name).replays >= 3, name
    if fixed == 'carry':  # the carry at a sequence start too: the head keeps its graph
        assert graphed.pts_bbox_head.captures == 1 and graphed.track_settle.captures == 1
    # the eager encoders' float atomics (index_add) are not bit-reproducible between the two
    # models on a GPU, so a near-tie of the merge may go the other way on a few voxels
    for i, ((sem, inst, inst_dev), (sem_ref, inst_ref, _)) in enumerate(zip(got, want)):
        assert (sem != sem_ref).float().mean() <= 0.01, f'frame {i}: semantics differ'
        assert (inst != inst_ref).float().mean() <= 0.01, f'frame {i}: instances differ'
        assert torch.equal(inst_dev.cpu(), inst), f'frame {i} was overwritten'


@pytest.mark.parametrize('fixed', [False, True, 'carry'])
def test_emulated_graphs_of_head_and_merge_equal_eager(fixed):
    graphs_of_head_and_merge_equal_eager(fixed, 'cpu')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('fixed', [False, True, 'carry'])
def test_cuda_graphs_of_head_and_merge_equal_eager(fixed):
    graphs_of_head_and_merge_equal_eager(fixed, 'cuda')



def with_garbage_padding(model, seed=0):
    """Fill the padding rows the head gets (``thing_valid`` False) with large random values."""
    head_forward = model.pts_bbox_head.forward
    gen = torch.Generator().manual_seed(seed)

    def forward(thing_query, thing_ref_pts, compact_occ, mask_features, thing_valid=None):
        assert thing_valid is not None and not thing_valid.all()
        pad = ~thing_valid[..., None]
        garbage = torch.randn(thing_query.shape, generator=gen) * 1e3
        thing_query = torch.where(pad, garbage, thing_query)
        thing_ref_pts = torch.where(pad, torch.rand(thing_ref_pts.shape, generator=gen),
                                    thing_ref_pts)
        return head_forward(thing_query, thing_ref_pts, compact_occ, mask_features,
                            thing_valid)

    model.pts_bbox_head.forward = forward
    return model


def test_garbage_padding_rows_do_not_change_the_stream():
    _, padded = build_pair()
    _, garbage = build_pair()
    want, _ = stream(padded)
    got, _ = stream(with_garbage_padding(garbage))
    # same shapes and kernels, masked padding: the valid rows are bit-identical, so are the
    # integer outputs
    assert_same_frames(got, want, atol=0.0)


def tiny_head():
    torch.manual_seed(0)
    head = TrackOccHead(num_classes=16, embed_dims=16, num_stuff_queries=3, occ_size=(6, 6, 2),
                        pc_range=[-4.0, -4.0, -1.0, 4.0, 4.0, 3.0],
                        decoder=dict(type='MaskDecoder', num_layers=2, num_heads=4,
                                     num_points=2),
                        sem_hidden_channels=8)
    head.init_weights()
    return head.eval()


def head_inputs(num=5, budget=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(1, budget, 32, generator=gen)
    ref = torch.rand(1, budget, 3, generator=gen)
    query[:, num:], ref[:, num:] = 0.0, 0.5
    valid = torch.arange(budget)[None] < num
    return (query, ref, torch.randn(1, 16, 3, 3, 2, generator=gen),
            torch.randn(1, 16, 6, 6, 2, generator=gen), valid)


def thing_rows(out, num):
    return torch.cat([torch.cat(out[k], -1).flatten(2) for k in
                      ('thing_cls', 'thing_masks', 'thing_centers')] +
                     [out['thing_ref_pts'], out['thing_embed']], -1)[:, :num]


def stuff_rows(out):
    return torch.cat([torch.cat(out[k], -1).flatten(2) for k in ('stuff_cls', 'stuff_masks')],
                     -1)


def test_head_padding_mask():
    head, num = tiny_head(), 5
    query, ref, compact, feats, valid = head_inputs(num)
    garbage_q, garbage_ref = query.clone(), ref.clone()
    garbage_q[:, num:] = torch.randn(1, 4, 32) * 1e3
    garbage_ref[:, num:] = torch.rand(1, 4, 3)
    with torch.no_grad():
        unpadded = head(query[:, :num], ref[:, :num], compact, feats)
        zeros = head(query, ref, compact, feats, valid)
        garbage = head(garbage_q, garbage_ref, compact, feats, valid)
        unmasked = head(garbage_q, garbage_ref, compact, feats)
    assert zeros['thing_cls'][-1].shape[1] == 9  # the padded rows come back (fixed shapes)
    # masked: the padding does not reach the valid thing rows nor the stuff rows
    for a, b in ((zeros, unpadded), (garbage, unpadded), (garbage, zeros)):
        torch.testing.assert_close(thing_rows(a, num), thing_rows(b, num), rtol=1e-4,
                                   atol=1e-4)
        torch.testing.assert_close(stuff_rows(a), stuff_rows(b), rtol=1e-4, atol=1e-4)
    # the same padding without the mask changes the valid rows: the check above can fail
    assert (thing_rows(unmasked, num) - thing_rows(unpadded, num)).abs().max() > 1e-2
    assert (stuff_rows(unmasked) - stuff_rows(unpadded)).abs().max() > 1e-2


def test_head_rejects_a_bad_valid_mask():
    head = tiny_head()
    query, ref, compact, feats, valid = head_inputs()
    for bad in (valid.long(), valid[:, :4]):
        with pytest.raises(ValueError, match='thing_valid must be a bool'):
            head(query, ref, compact, feats, bad)


def test_over_budget_raises_and_names_budget_and_count():
    _, padded = build_pair(budget=test_detector.NUM_QUERIES)  # room for the fresh queries
    with pytest.raises(RuntimeError, match=r'12 thing queries \(6 fresh \+ 6 live tracks\) '
                       r'exceed query_budget=6'):
        stream(padded, frames=((0, 2), ))


@pytest.mark.parametrize('budget', [5, 0, 7.0, True, '8'])
def test_invalid_budget(budget):
    model = test_detector.build()
    with pytest.raises(ValueError, match='query_budget must be None or an int >= '
                       r'num_thing_queries \(6\)'):
        model.query_budget = budget
    cfg = dict(test_detector.tiny_cfg(), query_budget=budget)
    with pytest.raises(ValueError, match='query_budget'):
        test_detector.build(cfg)


class StaticOutputHead(torch.nn.Module):
    """Stands in on CPU for the head replayed as a CUDA graph: every call writes its outputs
    into the same tensors, as a replay overwrites the outputs of the previous one."""

    def __init__(self, head):
        super().__init__()
        self.head = head
        self.static = None
        self.calls = 0

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__('head'), name)

    def forward(self, *args):
        from torch.utils._pytree import tree_flatten
        out = self.head(*args)
        self.calls += 1
        if self.static is None:
            leaves, spec = tree_flatten(out)
            self.static = (out, [x for x in leaves if torch.is_tensor(x)])
            return out
        for dst, src in zip(self.static[1], [x for x in tree_flatten(out)[0]
                                             if torch.is_tensor(x)]):
            dst.copy_(src)
        return self.static[0]


def test_head_outputs_are_not_read_after_the_next_head_call():
    """With a budget the head may be replayed as a CUDA graph, whose outputs the next replay
    overwrites: nothing that outlives a frame may keep a view of them (the memory bank, the
    carried tracks, the deferred query interaction). Same stream with overwritten outputs."""
    _, padded = build_pair()
    _, graphed = build_pair()
    graphed.pts_bbox_head = StaticOutputHead(graphed.pts_bbox_head)
    want, _ = stream(padded)
    got, _ = stream(graphed)
    assert graphed.pts_bbox_head.calls == len(want) > 3
    assert_same_frames(got, want, atol=0.0)


def test_fixed_track_rows_compile_the_tracking_once():
    """The point of fixed rows: the memory bank and query interaction see one input shape, so
    torch.compile traces them once per module, while the budget alone (rows = live tracks)
    traces them again as the track count changes."""
    from trackocc.utils.compile_modules import compiled_graphs
    counts = {}
    for fixed in (False, True):
        _, model = build_pair()
        model.fixed_track_rows = fixed
        torch._dynamo.reset()
        for name in ('query_interaction', 'memory_bank'):
            setattr(model, name, torch.compile(getattr(model, name), backend='eager'))
        before = compiled_graphs()
        records, _ = stream(model, frames=((0, 5), ))
        counts[fixed] = compiled_graphs() - before
        if fixed:
            assert len({int((r['obj_idxes'] >= 0).sum()) for r in records}) > 2  # counts vary
    assert counts[True] <= 2 < counts[False], counts
