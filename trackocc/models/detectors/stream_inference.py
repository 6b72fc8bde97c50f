"""The detector's inference: frames streamed one by one, the tracks carried from frame to frame
(deferred to the next frame, or, with fixed track rows, as the graphable steps of
:mod:`.tracking_steps`), the tracker's update and the panoptic merge."""
from contextlib import contextmanager
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from trackocc.structures.occ_data_sample import OccupancyData
from trackocc.utils.device_constants import to_device_async
from ..heads.instance_split import split_on_predicted_occupancy
from ..trackers import (RuntimeTracker, StreamState, TrackInstances, align_ref_points,
                        inverse_sigmoid, relative_ego_transform)
from .autocast_scope import AutocastScope
from .query_budget import filler_rows, pad_tracks

# Head outputs that, at inference, only the panoptic merge (and its audit) reads; both widen
# each logit to float32 themselves (``panoptic_merge_stats``, ``merge_fates``), so under AMP
# they stay in the autocast dtype: the same merge bit for bit, without writing (and reading
# back) a float32 copy of the (Q, X*Y*Z) mask logits (~0.8 GB per paper-config frame).
MERGE_ONLY_OUTPUTS = ('thing_masks', 'stuff_masks', 'budget_thing_masks')


class StreamInferenceMixin:
    """``predict`` of :class:`TrackOcc` and what it streams with. Uses the detector's
    sub-modules (``extract_feat``, ``pts_bbox_head`` through ``_run_head``, ``memory_bank`` /
    ``query_interaction`` through ``_next_frame_queries``, ``tracker``, ``panoptic_merge``,
    ``piece_tracker``, ``track_carry``, ``track_settle``), its frame helpers
    (``_empty_tracks``, ``_record_frame``, ``_velocity``, ``_fixed_rows``) and its settings
    (``query_budget``, ``num_thing_queries``, ``track_alignment``, ``pc_range``,
    ``time_interval``, thresholds, ``occ_size``, ``num_classes``, ``autocast_scope``)."""

    # inference stages that are not sub-module calls, reported to the stage callbacks
    CALLBACK_STAGES = ('panoptic_merge',)

    def reset_tracks(self) -> None:
        """Forget the streaming state (the next frame starts a sequence)."""
        self._test_state = None

    @property
    def stream_state(self) -> Optional[StreamState]:
        """What :meth:`predict` carries to the next frame (None before the first frame and
        after :meth:`reset_tracks`): ``'pending'``, the tracks the frame ended with, from
        which :meth:`StreamState.next_queries` builds the next frame's queries."""
        return self._test_state

    def register_stage_callback(self, callback: Callable[[str, str], None]) -> RemovableHandle:
        """Call ``callback(stage, 'start' | 'end')`` around each stage of :attr:`CALLBACK_STAGES`
        in :meth:`predict` (sub-module stages can be observed with forward hooks); e.g. for
        per-stage timing. Returns a handle whose ``remove()`` unregisters the callback."""
        handle = RemovableHandle(self._stage_callbacks)
        self._stage_callbacks[handle.id] = callback
        return handle

    def register_merge_observer(self, observer: Callable[[TrackInstances, Dict], None]
                                ) -> RemovableHandle:
        """Call ``observer(tracks, out)`` after the panoptic merge of each streamed frame, with
        the frame's tracks (after the tracker's update) and head outputs; e.g. to audit why
        tracks are or are not in the output (:meth:`merge_inputs`). Returns a handle whose
        ``remove()`` unregisters it."""
        handle = RemovableHandle(self._merge_observers)
        self._merge_observers[handle.id] = observer
        return handle

    @contextmanager
    def _stage(self, name: str):
        for callback in self._stage_callbacks.values():
            callback(name, 'start')
        yield
        for callback in self._stage_callbacks.values():
            callback(name, 'end')

    def _finish_frame(self, state: StreamState) -> TrackInstances:
        """The deferred end of a streamed frame (:meth:`StreamState.next_queries`):
        :meth:`_next_frame_queries` with the active tracks selected by index (their number
        comes from the end of the frame, see :class:`StreamState`: no device synchronisation
        here)."""
        tracks = state['pending']
        num_active = state.num_active()
        if not self._fixed_rows():
            inactive = (tracks.obj_idxes < 0).to(torch.uint8)
            active_index = torch.argsort(inactive, stable=True)[:num_active]
            return self._next_frame_queries(tracks, active_index)
        self._check_carried(num_active)
        return self._next_frame_queries(tracks, self._carried_rows(tracks), with_filler=True)

    def _check_carried(self, num_active: int) -> None:
        """Fixed track rows: refuse more live tracks than the budget has rows for."""
        if num_active > self.query_budget - self.num_thing_queries:
            raise RuntimeError(
                f'TrackOcc: {self.num_thing_queries + num_active} thing queries '
                f'({self.num_thing_queries} fresh + {num_active} live tracks) exceed '
                f'query_budget={self.query_budget}; raise model.query_budget (no track is '
                'dropped to fit the budget)')

    def _blank_tracks(self) -> TrackInstances:
        """Fixed track rows: the budget's rows as filler (no id, zero query, empty memory),
        what a sequence start carries (:meth:`carry_tracks` then gives the fresh queries
        followed by the filler of :func:`pad_tracks`)."""
        return pad_tracks(self._empty_tracks()[:0], self.query_budget)

    def _carried_rows(self, tracks: TrackInstances) -> Tensor:
        """Fixed track rows: (budget - fresh,) indices of the rows carried, the active tracks
        first, then rows without an id as filler."""
        inactive = (tracks.obj_idxes < 0).to(torch.uint8)
        return torch.argsort(inactive, stable=True)[:self.query_budget - self.num_thing_queries]

    def carry_tracks(self, tracks: TrackInstances, prev2curr: Tensor) -> TrackInstances:
        """Fixed track rows (:class:`TrackCarry`'s work): the next frame's queries from the
        budget's rows a frame ended with, ego-aligned by ``prev2curr``; the same as the
        deferred end of the frame (:meth:`_finish_frame`) followed by :meth:`_aligned_tracks`."""
        return self._aligned_tracks(
            self._next_frame_queries(tracks, self._carried_rows(tracks), with_filler=True),
            prev2curr)

    def predict(self, inputs: dict, data_samples: list) -> list:
        """Stream one frame: update tracks and write ``pred_occ`` into the frame.

        Args:
            inputs (dict): ``imgs`` (1, 1, N, 3, H, W).
            data_samples (list[TrackDataSample]): one clip of one frame.

        Returns:
            the ``data_samples`` whose frame carries ``pred_occ`` (``semantics`` uint8 and
            ``instances`` int32, both (X, Y, Z); ids persist within a sequence).
        """
        imgs = inputs['imgs']
        if imgs.shape[0] != 1 or imgs.shape[1] != 1 or len(data_samples) != 1:
            raise ValueError('TrackOcc.predict streams one frame of one sequence per call '
                             f'(batch_size=1, T=1), got images {tuple(imgs.shape[:2])}')
        amp = AutocastScope(self.autocast_scope, imgs.device.type)
        with amp.outside():
            self._predict_frame(imgs, data_samples[0].video_data_samples[0], amp)
        return data_samples

    def _aligned_tracks(self, tracks: TrackInstances, prev2curr: Tensor) -> TrackInstances:
        """Carried tracks with their reference points ego-aligned to the current frame
        (``track_alignment``); computed for all queries and selected, without a host-device
        synchronisation (float32 also under AMP)."""
        reference = self.track_alignment == 'reference'
        active = tracks.obj_idxes > 0 if reference else tracks.obj_idxes >= 0  # (Q,)
        ref = tracks.ref_pts.float()
        aligned = align_ref_points(ref, prev2curr, self.pc_range,
                                   self._velocity(tracks.pred_centers), self.time_interval)
        tracks.ref_pts = torch.where(active[:, None], aligned, ref)
        if reference:
            # the original concatenated [not aligned, aligned] tracks (a stable partition;
            # the identity when no track is aligned); filler rows stay last
            order = active.to(torch.uint8)
            if self._fixed_rows():
                order = order.masked_fill(filler_rows(tracks.obj_idxes,
                                                      self.num_thing_queries), 2)
            tracks = tracks[torch.argsort(order, stable=True)]
        return tracks

    def _predict_frame(self, imgs: Tensor, frame, amp: AutocastScope) -> None:
        meta = frame.metainfo
        # the encoders do not depend on the tracks: launched first, their GPU work overlaps
        # the host work of the previous frame's deferred tracking (StreamState)
        feats = self.extract_feat(imgs[:, 0], [meta], amp)
        self._test_state, semantics, instances, _ = self.stream_step(
            self._test_state, self.tracker, meta,
            lambda tracks: amp.region(self._run_head, tracks, feats['compact_occ'],
                                      feats['mask_features'], uncast_keys=MERGE_ONLY_OUTPUTS))
        self.pack_prediction(frame, semantics, instances)

    def stream_step(self, state: Optional[StreamState], tracker: RuntimeTracker, meta: dict,
                    run_network: Callable[[TrackInstances], Dict]
                    ) -> Tuple[StreamState, Tensor, Tensor, Dict]:
        """The tracking of one streamed frame around the network that predicts it.

        Starts the tracks (empty at a sequence start, else the previous frame's carried
        tracks ego-aligned), runs ``run_network(tracks)`` (the head's outputs for them: the
        detector's encoders + head, or an exported graph), updates ``tracker`` (its
        per-stream state; the merge keeps the tracks the detector's thresholds output),
        merges, and lets the tracker drop the births the merge does not show
        (``birth_needs_output``).

        Returns:
            the next frame's :class:`StreamState` (its tracking deferred), semantics and
            instance ids (N,) of the frame, and the head outputs.
        """
        ego2global = meta['ego2global']
        new_sequence = meta.get('start_of_sequence', False) or state is None or \
            state['sequence_id'] != meta.get('sequence_id')
        if new_sequence and self._fixed_rows():
            # through the carry too, from tracks with no live row: the same fresh queries and
            # filler, and the modules after it (e.g. a graphed head) always read its output
            tracker.reset()
            blank = self._blank_tracks()
            tracks = self.track_carry(blank, torch.eye(4, device=blank.query.device))
        elif new_sequence:
            tracks = self._empty_tracks()
            tracker.reset()
        else:
            prev2curr = relative_ego_transform(state['ego2global'], ego2global)
            if self._fixed_rows() and state.has_pending():  # the whole carry in one call
                self._check_carried(state.num_active())
                pending = state.take_pending()
                tracks = self.track_carry(pending, to_device_async(
                    prev2curr, pending.obj_idxes.device))
            else:
                tracks = self._aligned_tracks(state.next_queries(), prev2curr)
        if self._fixed_rows():  # a stream begun without fixed rows: its tracks padded
            tracks = pad_tracks(tracks, self.query_budget)
        out = run_network(tracks)
        unborn = tracks.obj_idxes < 0 if tracker.birth_needs_output else None
        device = tracks.obj_idxes.device
        max_obj_id = tracker.next_id(device)
        if not self._fixed_rows():
            settle = self.settle_tracks
        else:  # in one call; a graph's inputs live on the device (a CPU scalar at a start)
            settle = self.track_settle
            if max_obj_id.device != device:
                max_obj_id = torch.full((), int(max_obj_id), dtype=torch.long, device=device)
        tracks, semantics, instances, tracker.max_obj_id = settle(tracks, out, max_obj_id,
                                                                   tracker)
        if self.instance_split_connectivity is not None:
            with self._stage('panoptic_merge'):
                instances = split_on_predicted_occupancy(
                    instances, out.get('sem_logits'), self.occ_size, self.num_classes - 1,
                    self.instance_split_connectivity)
        for observer in self._merge_observers.values():
            observer(tracks, out)
        if unborn is not None:
            tracker.drop_hidden_births(tracks, unborn, instances)
        if self.piece_tracker is not None:
            instances = self.piece_tracker(instances, ego2global, semantics, new_sequence)
        next_state = StreamState(self._finish_frame, ego2global=ego2global,
                                 sequence_id=meta.get('sequence_id'))
        next_state.set_pending(tracks)
        return next_state, semantics, instances, out

    def settle_tracks(self, tracks: TrackInstances, out: Dict, max_obj_id: Tensor,
                      tracker: RuntimeTracker
                      ) -> Tuple[TrackInstances, Tensor, Tensor, Tensor]:
        """A frame's tracks after the head (:class:`TrackSettle`'s work; also the step
        without fixed rows): the head's outputs recorded on ``tracks`` (in place; filler rows
        scored 0: no birth, save or output), reference points from the head, ``tracker``'s
        update from the next free id ``max_obj_id`` (:meth:`RuntimeTracker.assign`), and the
        panoptic merge. Returns the tracks, semantics and instance ids (N,) and the next free
        id."""
        self._record_frame(tracks, out)
        if self._fixed_rows():
            tracks.scores = tracks.scores.masked_fill(
                filler_rows(tracks.obj_idxes, self.num_thing_queries), 0)
        tracks.ref_pts = inverse_sigmoid(out['thing_ref_pts'][0].float())
        max_obj_id = tracker.assign(tracks, max_obj_id)
        with self._stage('panoptic_merge'):
            semantics, instances = self._merge(tracks, out)
        return tracks, semantics, instances, max_obj_id

    def pack_prediction(self, frame, semantics: Tensor, instances: Tensor) -> None:
        """Set ``frame.pred_occ`` from the merged (N,) semantics and instance ids (copies: the
        merge's outputs may belong to a CUDA graph that the next frame replays)."""
        frame.pred_occ = OccupancyData(
            semantics=semantics.view(self.occ_size).to(torch.uint8),
            instances=instances.view(self.occ_size).clone())

    def _merge(self, tracks: TrackInstances, out: Dict):
        """Panoptic merge of live tracks (id + 1) and stuff queries (id 0).

        All thing queries are passed with ``valid`` marking the live ones (same result as
        merging only those, without a host-device synchronisation); thing and stuff masks
        go in as two row blocks, without a concatenated (Q + S, N) copy. Under a query budget
        the thing rows are the head's budget rows, the padding not ``valid`` (the same
        result, with shapes fixed for :attr:`panoptic_merge`)."""
        return self.panoptic_merge(**self.merge_inputs(tracks, out,
                                                       budget='budget_thing_masks' in out))

    def merge_inputs(self, tracks: TrackInstances, out: Dict, budget: bool = False) -> Dict:
        """Keyword arguments of :func:`merge_panoptic` for a frame's tracks and head outputs:
        the Q thing rows (in track order) then the S stuff rows; ``valid`` marks the live
        tracks (:meth:`RuntimeTracker.output_mask`) and every stuff query. ``budget``: the
        thing rows are the head's ``budget_thing_*`` outputs (:meth:`_run_head` under a query
        budget), the rows after the Q tracks padding that is not ``valid``."""
        live = self.tracker.output_mask(tracks)
        num_stuff = out['stuff_cls'][-1].shape[1]
        if budget:
            thing_cls, thing = out['budget_thing_cls'][0], out['budget_thing_masks'][0]
        else:
            thing_cls, thing = out['thing_cls'][-1][0], out['thing_masks'][-1][0]
        pad = len(thing_cls) - len(tracks)
        cls = torch.cat([thing_cls, out['stuff_cls'][-1][0]])
        thing = thing.flatten(1)
        stuff = out['stuff_masks'][-1][0].flatten(1)
        dtype = torch.promote_types(thing.dtype, stuff.dtype)
        ids = tracks.obj_idxes
        return dict(cls_logits=cls, mask_logits=[thing.to(dtype), stuff.to(dtype)],
                    segment_ids=torch.cat([ids + 1, ids.new_zeros(pad + num_stuff)]),
                    free_class=self.num_classes - 1, score_thresh=self.score_threshold,
                    overlap_thresh=self.overlap_threshold, refill=self.merge_refill,
                    valid=torch.cat([live, live.new_zeros(pad), live.new_ones(num_stuff)]))
