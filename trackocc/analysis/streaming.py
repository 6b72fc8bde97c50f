"""A synthetic stream of frames through ``TrackOcc.predict`` and the live-track cap that
keeps a random-weight model's track set bounded."""
from typing import Tuple

import numpy as np
import torch

from ..utils.synthetic_inputs import synthetic_batch


def synthetic_stream(model) -> Tuple[dict, object, object]:
    """Preprocessed inputs of one synthetic frame (batch 1, the model's cameras and input
    size): ``(inputs, clip, frame)``, ``frame`` being the clip's one frame sample, whose
    meta :func:`move_to_frame` changes between ``predict`` calls."""
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), False)
    clip = data['data_samples'][0]
    return data['inputs'], clip, clip.video_data_samples[0]


def move_to_frame(frame, index: int, step_m: float = 2.0, interval_s: float = 0.5) -> None:
    """Set ``frame``'s meta to frame ``index`` of one sequence: the ego ``step_m`` further
    along x per frame, ``interval_s`` apart; frame 0 starts the sequence."""
    ego2global = np.eye(4)
    ego2global[0, 3] = step_m * index
    frame.set_metainfo(dict(start_of_sequence=index == 0, frame_idx=index, sample_idx=index,
                            ego2global=ego2global, timestamp=interval_s * index))


def second_frame(model, max_live_tracks: int = 64) -> Tuple[dict, object, int, int]:
    """Stream synthetic frame 0 (it starts the sequence), cap its live tracks at
    ``max_live_tracks`` (see :func:`cap_live_tracks`) and set the stream to frame 1: the
    frame a per-frame count measures. Returns ``(inputs, clip, live_tracks, thing_queries)``
    for ``model.predict(inputs, [clip])`` (eval mode, no grad) of frame 1, whose thing queries
    are the fresh ones plus the carried tracks."""
    model.eval()
    inputs, clip, frame = synthetic_stream(model)
    model.reset_tracks()
    with torch.no_grad():
        move_to_frame(frame, 0)
        model.predict(inputs, [clip])
        live = cap_live_tracks(model, max_live_tracks)
        num_queries = len(model.stream_state.next_queries())
    move_to_frame(frame, 1)
    return inputs, clip, live, num_queries


def cap_live_tracks(model, max_live: int) -> int:
    """Keep at most ``max_live`` live tracks (the highest scores) in the model's streaming
    state, and every fresh query; returns the number of live tracks kept.

    Random weights and random images give nearly every query a confident score, so without a
    cap a new track would be born from almost every fresh query on every frame and the query
    set (and the (Q, X*Y*Z) mask logits) would grow without bound, unlike a trained model on a
    real scene. ``max_live <= 0`` disables the cap. Works on the tracks the frame ended with
    (``model.stream_state``, before the deferred query interaction, see
    :class:`trackocc.models.trackers.StreamState`), without building the next frame's queries.
    """
    state = model.stream_state
    if state is None:
        raise RuntimeError('cap_live_tracks: the model has no streaming state (no frame '
                           'streamed since reset_tracks)')
    pending = 'pending' in state
    tracks = state['pending'] if pending else state['tracks']
    active = tracks.obj_idxes >= 0
    num = int(active.sum())
    if max_live <= 0 or num <= max_live:
        return num
    act_idx = torch.nonzero(active, as_tuple=False)[:, 0]
    best = tracks.scores[act_idx].float().argsort(descending=True)[:max_live]
    keep = ~active
    keep[act_idx[best]] = True
    if pending:
        state.set_pending(tracks[keep])
    else:
        state['tracks'] = tracks[keep]
    return max_live
