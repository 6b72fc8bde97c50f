"""The tracking modules under ``torch.compile`` (the fast path's ``--compile-modules
query_interaction memory_bank``): compiled with dynamic shapes
(:func:`~trackocc.utils.compile_modules.dynamic_shape_modules`), a sequence that starts with
another number of tracks compiles nothing. Compiled on their first sizes, it recompiles
mid-stream: a sequence's second frame is a kind of call of its own (its tracks still hold the
fresh query parameters), specialised on the first sequence's births, and on one H200 that
recompile was a single ~1 s frame (docs/benchmark.md).

Dynamo's eager backend: the compile counts are the same as with Inductor, without its kernels."""
import functools
import os.path as osp

import pytest
import torch

from trackocc.analysis.model_setup import build_model, load_config
from trackocc.analysis.streaming import move_to_frame, synthetic_stream
from trackocc.utils.compile_modules import (TRACK_ROW_MODULES, compile_modules, compiled_graphs,
                                            dynamic_shape_modules)

TINY = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'trackocc',
                'trackocc_tiny_synthetic.py')


def stream_sequences(model, thresholds, frames=2):
    """One sequence per tracker score threshold (a threshold sets the births of the random
    weights' first frame); per frame: (graphs compiled, live tracks)."""
    inputs, clip, frame = synthetic_stream(model)
    compiles, live = [], []
    with torch.no_grad():
        for threshold in thresholds:
            model.tracker.score_thresh = threshold
            model.reset_tracks()
            for index in range(frames):
                move_to_frame(frame, index)
                before = compiled_graphs()
                model.predict(inputs, [clip])
                compiles.append(compiled_graphs() - before)
                state = model.stream_state
                tracks = state['pending'] if 'pending' in state else state['tracks']
                live.append(int((tracks.obj_idxes >= 0).sum()))
    return compiles, live


@pytest.mark.parametrize('dynamic', [True, False])
def test_a_new_track_count_recompiles_only_static_tracking(dynamic, monkeypatch):
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='eager'))
    torch._dynamo.reset()
    model = build_model(load_config(TINY), None, 'cpu').eval()
    assert dynamic_shape_modules(model) == TRACK_ROW_MODULES
    compile_modules(model, TRACK_ROW_MODULES, strict=True,
                    dynamic=dynamic_shape_modules(model) if dynamic else ())
    compiles, live = stream_sequences(model, (0.5, 0.5, 0.45))
    assert live[0] == live[2] != live[4] > 0, live  # the third sequence starts with more tracks
    assert compiles[1] > 0  # the first sequence's second frame compiles the tracking
    assert compiles[2:4] == [0, 0]  # the same sizes again
    if dynamic:
        assert compiles[4:] == [0, 0], compiles
    else:  # what the dynamic shapes avoid: a recompile in a later sequence's second frame
        assert compiles[5] > 0, compiles
