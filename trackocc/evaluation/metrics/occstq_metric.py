"""OccSTQ as an MMEngine metric (video aware, streaming, distributed)."""
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from mmdet.structures import TrackDataSample
from mmengine.dist import (broadcast_object_list, collect_results, get_world_size,
                           is_main_process)
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from trackocc.registry import METRICS

from ...structures.occ_data_sample import OccDataSample
from ...structures.sample_index import split_sample_idx
from ..functional import (OccSTQSettings, SequenceAccumulator, evaluation_mask, format_table,
                          merge_partial_states, sequence_rows, summarize, write_pred_frame,
                          write_sequence_csv)


def _to_numpy(value: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _on_cuda(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_cuda


class _PendingFrame:
    """A frame of :meth:`OccSTQMetric.process` and its arrays (name -> tensor, array or
    ``None``); with ``overlap``, the CUDA tensors' copies to pinned host memory are queued on
    the current stream and ``ready`` marks their end (``None``: nothing to wait for)."""

    def __init__(self, frame: Any, sample_idx: Optional[int], arrays: dict,
                 overlap: bool) -> None:
        self.frame, self.sample_idx, self.ready = frame, sample_idx, None
        on_cuda = [k for k, v in arrays.items() if _on_cuda(v)]
        if overlap and on_cuda:
            arrays = {k: v.detach().to('cpu', non_blocking=True) if k in on_cuda else v
                      for k, v in arrays.items()}
            self.ready = torch.cuda.Event()
            self.ready.record()
        self.arrays = arrays

    def host_arrays(self) -> Dict[str, Optional[np.ndarray]]:
        """The arrays as numpy, after the queued copies have finished."""
        if self.ready is not None:
            self.ready.synchronize()
        return {k: None if v is None else _to_numpy(v) for k, v in self.arrays.items()}


def iter_frames(data_samples: Sequence[Any]) -> Iterator[Any]:
    """Per-frame samples of a batch: a ``TrackDataSample`` (or its ``to_dict()``, which
    mmengine's ``Evaluator`` hands over and whose ``video_data_samples`` still holds the frame
    objects) -> its frames; anything else is taken as one frame."""
    for sample in data_samples:
        if isinstance(sample, TrackDataSample):
            yield from sample.video_data_samples
        elif isinstance(sample, dict) and 'video_data_samples' in sample:
            yield from sample['video_data_samples']
        else:
            yield sample


def _occ_frame(frame: Any) -> OccDataSample:
    if not isinstance(frame, OccDataSample):
        raise TypeError('OccSTQMetric: frames must be OccDataSample (what PackTrackOccInputs '
                        f'packs and TrackOcc.predict fills), got {type(frame).__name__}')
    return frame


@METRICS.register_module()
class OccSTQMetric(BaseMetric):
    """OccSTQ = sqrt(AQ * mIoU) of 4D panoptic occupancy (see ``docs/occstq.md``).

    ``process`` turns each frame into counts right away (no prediction is kept): frames of a
    sequence may arrive over many calls and even on several ranks; the per-sequence partial
    counts of all ranks are merged exactly in :meth:`evaluate`, then each sequence is closed.

    Each frame is an :class:`~trackocc.structures.OccDataSample` with metainfo
    ``sequence_id``, ``frame_idx`` and ``sample_idx`` (the first two default to the ones
    ``sample_idx`` encodes), ``pred_occ`` with ``semantics`` / ``instances`` and ``gt_occ``
    with ``semantics``, ``instances``, ``mask_camera``, ``infov`` (each (200, 200, 16)).

    Args:
        settings: ``None``/'reference' (the original evaluator's numbers), 'strict', a dict
            (``preset`` plus :class:`OccSTQSettings` fields) or an :class:`OccSTQSettings`.
        csv_file: write one row per sequence (OccSTQ, AQ, mIoU, tubes) to this path.
        format_only: only write predictions as ``<outfile_prefix>/<sample_idx>.npz``
            (``pano_sem`` uint8 / ``pano_inst`` int16, flat) for
            ``tools/evaluate_predictions.py``; no gt is read and no metric is returned.
        outfile_prefix: folder for ``format_only``.
        print_table: log the per-class table.
        overlap_copies: queue the device-to-host copies of CUDA frames and count them at the
            next :meth:`process` call (see there); the counts are the same. Defaults to True.
        collect_device / prefix: as :class:`mmengine.evaluator.BaseMetric`.

    After an evaluation, ``sequence_results`` holds the per-sequence rows (as the CSV's) on the
    rank that scored.
    """

    default_prefix: Optional[str] = 'occstq'

    def __init__(self,
                 settings: Union[None, str, dict, OccSTQSettings] = None,
                 csv_file: Optional[str] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 print_table: bool = True,
                 overlap_copies: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        self.settings = OccSTQSettings.from_config(settings)
        self.csv_file = csv_file
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.print_table = print_table
        self.overlap_copies = overlap_copies
        self._pending: List[_PendingFrame] = []
        if format_only and not outfile_prefix:
            raise ValueError('OccSTQMetric: format_only=True needs outfile_prefix (the folder '
                             'to write <sample_idx>.npz predictions to)')
        # partial counts of every sequence seen on this rank, {sequence_id: accumulator}
        self.sequence_states: Dict[int, SequenceAccumulator] = {}
        self._last_sequence: Optional[int] = None
        self._num_written = 0
        self.sequence_results: List[Dict] = []

    # ------------------------------------------------------------------ streaming
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Add every frame of the batch to its sequence's counts (or write it out).

        Frames whose arrays are on a CUDA device are counted at the next call (or in
        :meth:`evaluate`): here their device-to-host copies are only queued behind the
        prediction, so the host's counting of this frame overlaps the device's work on the
        next one instead of waiting for this one (``overlap_copies``)."""
        self.flush()
        for frame in map(_occ_frame, iter_frames(data_samples)):
            sample_idx = frame.metainfo.get('sample_idx')
            if 'pred_occ' not in frame:
                raise KeyError(f'OccSTQMetric: frame sample_idx={sample_idx} has no pred_occ')
            arrays = dict(pred_sem=frame.pred_occ.semantics,
                          pred_inst=frame.pred_occ.instances)
            if not self.format_only:
                if 'gt_occ' not in frame:
                    raise KeyError(f'OccSTQMetric: frame sample_idx={sample_idx} has no '
                                   'gt_occ')
                gt = frame.gt_occ
                arrays.update(gt_sem=gt.semantics, gt_inst=gt.instances,
                              mask_camera=gt.get('mask_camera'), infov=gt.get('infov'))
            pending = _PendingFrame(frame, sample_idx, arrays, self.overlap_copies)
            if pending.ready is None and not self._pending:
                self._count(pending)
            else:  # behind queued frames too: the counts keep the stream's order
                self._pending.append(pending)

    def flush(self) -> None:
        """Count the frames :meth:`process` queued (waiting for their copies)."""
        pending, self._pending = self._pending, []
        for frame in pending:
            self._count(frame)

    def _count(self, pending: '_PendingFrame') -> None:
        frame, sample_idx, arrays = pending.frame, pending.sample_idx, pending.host_arrays()
        if self.format_only:
            if sample_idx is None:
                raise KeyError('OccSTQMetric: format_only needs metainfo sample_idx')
            write_pred_frame(osp.join(self.outfile_prefix, f'{int(sample_idx)}.npz'),
                             arrays['pred_sem'], arrays['pred_inst'])
            self._num_written += 1
            return
        self._add_frame(frame, sample_idx, arrays)

    def _add_frame(self, frame: OccDataSample, sample_idx: Optional[int],
                   arrays: Dict[str, Optional[np.ndarray]]) -> None:
        seq_id = frame.metainfo.get('sequence_id')
        frame_idx = frame.metainfo.get('frame_idx')
        if seq_id is None or frame_idx is None:
            if sample_idx is None:
                raise KeyError('OccSTQMetric: a frame has neither sequence_id/frame_idx nor '
                               'sample_idx in its metainfo')
            decoded = split_sample_idx(sample_idx)
            seq_id = decoded.sequence_id if seq_id is None else seq_id
            frame_idx = decoded.frame if frame_idx is None else frame_idx
        seq_id, frame_idx = int(seq_id), int(frame_idx)
        gt_sem = arrays['gt_sem']
        mask = evaluation_mask(arrays['mask_camera'], arrays['infov'], self.settings,
                               gt_sem.shape)
        if seq_id != self._last_sequence and self._last_sequence in self.sequence_states:
            self.sequence_states[self._last_sequence].compact()  # the previous sequence ended here
        self._last_sequence = seq_id
        acc = self.sequence_states.get(seq_id)
        if acc is None:
            acc = self.sequence_states[seq_id] = SequenceAccumulator(seq_id, self.settings)
        acc.add_frame(arrays['pred_sem'], arrays['pred_inst'], gt_sem, arrays['gt_inst'], mask,
                      frame_idx=frame_idx,
                      source=f'OccSTQMetric (sample_idx={sample_idx}, sequence {seq_id})')

    # ------------------------------------------------------------------ results
    def evaluate(self, size: int = 1) -> dict:
        """Gather every rank's partial sequence counts, merge, score on rank 0 and broadcast.
        ``size`` (the dataset length) is not used: results are per sequence, not per sample."""
        self.flush()
        if self.format_only:
            print_log(f'OccSTQMetric: wrote {self._num_written} predictions to '
                      f'{self.outfile_prefix} (format_only, not scored)', logger='current')
            self._num_written = 0
            return {}
        state = self.sequence_states
        self.sequence_states, self._last_sequence = {}, None
        for acc in state.values():
            acc.compact()
        gathered = collect_results([state], get_world_size(), self.collect_device)
        out: List[Any] = [None]
        if is_main_process():
            try:
                metrics = self.compute_metrics(gathered)
                if self.prefix:
                    metrics = {f'{self.prefix}/{k}': v for k, v in metrics.items()}
                out = [metrics]
            except Exception as err:  # re-raised on every rank below, so none waits forever
                out = [err]
        broadcast_object_list(out)
        if isinstance(out[0], Exception):
            raise out[0]
        return out[0]

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """``results``: list of per-rank ``{sequence_id: SequenceAccumulator}`` dicts."""
        merged = merge_partial_states(results)
        if not merged:
            raise RuntimeError('OccSTQMetric: no frame was processed; nothing to evaluate')
        stats = [merged[k].close() for k in sorted(merged)]
        result = summarize(stats, self.settings)
        self.sequence_results = sequence_rows(stats, self.settings)
        names = self._class_names()
        if self.print_table:
            print_log('OccSTQ (' + ('reference' if self.settings == OccSTQSettings()
                                   else 'custom settings') + '):\n'
                      + format_table(result, names, self.settings), logger='current')
        if self.csv_file:
            write_sequence_csv(self.csv_file, self.sequence_results)
            print_log(f'OccSTQMetric: per-sequence results written to {self.csv_file}',
                      logger='current')
        return self.flatten_result(result, names)

    def flatten_result(self, result: dict, names: Sequence[str]) -> Dict[str, float]:
        """Flat dict for the logger: OccSTQ, AQ, mIoU, then IoU_<class>, AQ_<class>."""
        flat = {k: float(result[k]) for k in ('OccSTQ', 'AQ', 'mIoU')}
        for cl in self.settings.include_classes:
            flat[f'IoU_{names[cl]}'] = result['per_class_iou'][cl]
        for cl in self.settings.include_classes:
            if result['num_tubes'][cl]:
                flat[f'AQ_{names[cl]}'] = result['per_class_aq'][cl]
        return flat

    def _class_names(self) -> List[str]:
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and len(classes) == self.settings.num_classes:
            return [str(c) for c in classes]
        return list(self.settings.class_names)
