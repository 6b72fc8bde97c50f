"""The detector's training pass: each clip of a batch run frame by frame with its track queries
carried across frames, and the losses of every frame (depth, stuff / semantic, matched thing
tracks)."""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from trackocc.utils.batch_samples import batch_samples
from ..losses.host_counts import HostCountChecks, frame_voxel_counts
from ..losses.mask_losses import visible_index
from ..losses.thing_targets import build_thing_targets
from ..trackers import TrackInstances, align_ref_points, inverse_sigmoid, relative_ego_transform
from .autocast_scope import AutocastScope
from .graph_anchor import zero_weight_anchor

# The head's voxel mask logits, (Q, X*Y*Z) a layer, stay in the autocast dtype in training:
# the matching and the losses gather their rows and visible voxels first and widen only
# those to float32 (the same values and, each logit having one consumer, the same gradients
# as widening the whole tensor, whose float32 copy was ~4 GiB of memory traffic a
# paper-config clip).
MASK_LOGIT_OUTPUTS = ('thing_masks', 'stuff_masks')


class ClipTrainingMixin:
    """``loss`` of :class:`TrackOcc`. Uses the detector's sub-modules (``extract_feat``,
    ``pts_bbox_head``, ``track_criterion``, ``memory_bank``, ``query_interaction``,
    ``refiner``), its clip helpers (``clip_features``, ``clip_image_features``), its frame
    helpers (``_run_head``, ``_empty_tracks``, ``_record_frame``,
    ``_velocity``, ``_next_frame_queries``) and its settings (``occ_size``, ``pc_range``,
    ``time_interval``, ``with_velo``, ``velocity_source``, ``train_visibility``,
    ``autocast_scope``, ``anchor_track_modules``, ``use_gt_voxel_counts``)."""

    def _check_gt(self, frame) -> None:
        gt = frame.get('gt_occ')
        if gt is None:
            raise KeyError(f'TrackOcc.loss: frame {frame.metainfo.get("sample_idx")} has no '
                           'gt_occ')
        if tuple(gt.semantics.shape) != tuple(self.occ_size):
            raise ValueError(f'TrackOcc.loss: gt_occ of frame {frame.metainfo.get("sample_idx")}'
                             f' is {tuple(gt.semantics.shape)}, grid_config gives '
                             f'{tuple(self.occ_size)}')
        frame_voxel_counts(gt, f'TrackOcc.loss (sample {frame.metainfo.get("sample_idx")})')

    def loss(self, inputs: dict, data_samples: list) -> Dict[str, Tensor]:
        """Run each clip frame by frame carrying track instances.

        Args:
            inputs (dict): ``imgs`` (B, T, N, 3, H, W).
            data_samples (list[TrackDataSample]): B clips of T frames with ``gt_occ`` (and
                ``gt_depth`` for the depth loss).

        Returns:
            dict of losses, keys ``frame{t}_<name>``; raises FloatingPointError naming
            the term if one is NaN/inf.
        """
        imgs = inputs['imgs']
        B, T = imgs.shape[:2]
        clips = [ds.video_data_samples for ds in data_samples]
        if len(clips) != B or any(len(c) != T for c in clips):
            raise ValueError(f'TrackOcc.loss: images are (B={B}, T={T}) but data_samples hold '
                             f'{[len(c) for c in clips]} frames')
        for clip in clips:
            for frame in clip:
                self._check_gt(frame)
        amp = AutocastScope(self.autocast_scope, imgs.device.type)
        checks = HostCountChecks() if self.use_gt_voxel_counts else None
        with amp.outside():
            losses = self._clip_losses(imgs, clips, amp, checks)
        self._check_finite(losses, checks)
        return losses

    def _train_visible(self, gt_occ) -> Tensor:
        """(X, Y, Z) bool voxels that count in training (``train_visibility``)."""
        visible = gt_occ.mask_camera.bool()
        if self.train_visibility == 'camera_and_infov':
            if 'infov' not in gt_occ:
                raise KeyError("TrackOcc.loss: train_visibility='camera_and_infov' needs "
                               'gt_occ.infov (see docs/data_contract.md)')
            visible = visible & gt_occ.infov.bool()
        return visible

    def _clip_losses(self, imgs: Tensor, clips: list, amp: AutocastScope,
                     checks: Optional[HostCountChecks] = None) -> Dict[str, Tensor]:
        B, T = imgs.shape[:2]
        tracks = [self._empty_tracks() for _ in range(B)]
        losses: Dict[str, Tensor] = {}

        def add(name: str, value: Tensor, scale: float = 1.0) -> None:
            # no `0 +` and no `* 1.0`: each would be one more kernel forward and backward
            if scale != 1.0:
                value = value * scale
            losses[name] = losses[name] + value if name in losses else value

        # the feature networks once over the clip, else the image encoder once, else
        # frame by frame (None)
        clip_feats = self.clip_features(imgs, clips, amp)
        clip_imgs = self.clip_image_features(imgs, amp) if clip_feats is None else None
        # the ground truth's instance targets after the encoders' launches: on a GPU the
        # host builds them while the device still runs the encoders
        targets = [build_thing_targets([f.gt_occ for f in clip],
                                       [f.metainfo['ego2global'] for f in clip],
                                       self.pc_range, self.time_interval, self.with_velo,
                                       self.velocity_source, checks)
                   for clip in clips]
        for t in range(T):
            frames = [clip[t] for clip in clips]
            feats = clip_feats[t] if clip_feats is not None else self.extract_feat(
                imgs[:, t], [f.metainfo for f in frames], amp,
                None if clip_imgs is None else clip_imgs[t])
            if all('gt_depth' in f for f in frames):
                gt_depth = torch.stack([f.gt_depth for f in frames])
                add(f'frame{t}_loss_depth',
                    self.img_view_transformer.get_depth_loss(gt_depth, feats['depth']))
            compact_occ = batch_samples(feats['compact_occ'], keepdim=True)
            mask_features = batch_samples(feats['mask_features'], keepdim=True)
            for b, frame in enumerate(frames):
                gt_occ = frame.gt_occ
                visible = self._train_visible(gt_occ)
                # the frame's visible voxels as indices once for the stuff and the thing
                # losses: sized by the ground truth's voxel counts when the data packed
                # them (checked on the device), else one host synchronisation
                counts = None if checks is None else frame_voxel_counts(gt_occ, 'TrackOcc.loss')
                rule = self.train_visibility
                visible_idx = visible_index(visible.reshape(-1),
                                            None if counts is None else counts['visible'][rule])
                if counts is not None:
                    checks.add(f'visible voxels of frame {t} (sample '
                               f'{frame.metainfo.get("sample_idx")})',
                               visible.sum() == counts['visible'][rule])
                out = amp.region(self._run_head, tracks[b], compact_occ[b], mask_features[b],
                                 uncast_keys=MASK_LOGIT_OUTPUTS)
                # the thing matching's costs go to the host first, without a wait: the stuff
                # matching's read below waits for both (one wait a frame, not two)
                layers = self._thing_layers(out)
                started = self.track_criterion.start_match(tracks[b].obj_idxes, layers,
                                                           targets[b][t], visible_idx)
                present = None if counts is None else [counts['classes'][rule]]
                for k, v in self.pts_bbox_head.loss(out, gt_occ.semantics[None], visible[None],
                                                    [visible_idx], present, checks).items():
                    add(f'frame{t}_{k}', v, 1.0 / B)
                tracks[b], match = self._track_frame_losses(
                    tracks[b], out, layers, started, targets[b][t], visible_idx, t, add, 1.0 / B)
                if t + 1 < T:
                    curr2next = relative_ego_transform(frame.metainfo['ego2global'],
                                                       clips[b][t + 1].metainfo['ego2global'])
                    tracks[b] = self._to_next_frame(tracks[b], out, curr2next, match)
        if self.anchor_track_modules:
            anchor = zero_weight_anchor((self.query_interaction, self.memory_bank,
                                         self.refiner))
            if anchor is not None:  # into the first term: no new key in the logs
                first = next(iter(losses))
                losses[first] = losses[first] + anchor
        return losses

    @staticmethod
    def _thing_layers(out: Dict) -> list:
        """Per decoder layer the head's thing ``(cls (Q, C), masks (Q, N), centers)`` of its
        one sample (the batch of 1 taken as views, not selected)."""
        return [(batch_samples(out['thing_cls'][lid])[0],
                 batch_samples(out['thing_masks'][lid])[0].flatten(1),
                 batch_samples(out['thing_centers'][lid])[0])
                for lid in range(len(out['thing_cls']))]

    def _track_frame_losses(self, tracks: TrackInstances, out: Dict, layers: list, started,
                            gt, visible: Tensor, t: int, add, scale: float):
        """Match every decoder layer's thing predictions (``layers``: :meth:`_thing_layers`;
        ``started``: their ``track_criterion.start_match``, one host round trip for all
        layers), add their losses, and keep the last layer's assignment (ids persist over
        the clip). Returns the tracks and the last layer's ``LayerMatch``."""
        visible = visible_index(visible)  # indices: no synchronisation per layer and loss
        matches = self.track_criterion.match_layers(tracks.obj_idxes, layers, gt, visible,
                                                    started)
        for lid, ((cls, masks, centers), match) in enumerate(zip(layers, matches)):
            for k, v in self.track_criterion.loss(cls, masks, centers, gt, match.src,
                                                  match.tgt, visible,
                                                  match.num_present).items():
                add(f'frame{t}_{k}_d{lid}', v, scale)
        tracks.obj_idxes = matches[-1].obj_idxes
        tracks.matched_gt_idxes = matches[-1].matched_gt_idxes
        self._record_frame(tracks, out)
        return tracks, matches[-1]

    def _to_next_frame(self, tracks: TrackInstances, out: Dict, curr2next: Tensor,
                       match=None) -> TrackInstances:
        """Training: ego-align the reference points to the next frame of the clip, then
        :meth:`_next_frame_queries` (``match``: the frame's last ``LayerMatch``, whose
        active and inactive rows the query interaction takes instead of counting them on
        the device).

        Inference aligns at the start of the next frame instead (:meth:`_aligned_tracks`):
        a stream knows the next ego pose only then. The maths is the same
        (:func:`align_ref_points` per track; the memory bank and the query interaction leave
        the reference points alone, so the order does not matter); training aligns every
        query, of which only the carried ones are used, inference only the carried ones, and
        only inference has the original's ``track_alignment='reference'`` quirk."""
        ref = inverse_sigmoid(out['thing_ref_pts'][0])
        tracks.ref_pts = align_ref_points(ref, curr2next, self.pc_range,
                                          self._velocity(out['thing_centers'][-1][0]),
                                          self.time_interval)
        if match is None:
            return self._next_frame_queries(tracks)
        return self._next_frame_queries(tracks, active_index=match.active_index,
                                        inactive_index=match.inactive_index)

    def parse_losses(self, losses: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """MMEngine's ``parse_losses`` (the sum of the terms whose key holds ``'loss'``, then
        ``loss`` and every term for the logs) in one stacked sum when every term is a 0-dim
        tensor of one dtype, as this detector's are: two kernels instead of two per term,
        forward and backward. The same gradients; the total up to the order of the sum."""
        values = list(losses.values())
        if not values or any(not isinstance(v, Tensor) or v.dim() != 0
                             or v.dtype != values[0].dtype for v in values):
            return super().parse_losses(losses)
        terms = [v for k, v in losses.items() if 'loss' in k]
        loss = torch.stack(terms).sum() if terms else 0
        return loss, OrderedDict([('loss', loss), *losses.items()])

    @staticmethod
    def _check_finite(losses: Dict[str, Tensor],
                      checks: Optional[HostCountChecks] = None) -> None:
        """Raise if a loss term is not finite or a size taken from the host's voxel counts
        is not the ground truth's (``checks``): one host read for both."""
        values = torch.stack([v.detach().float() if v.dim() == 0 else v.detach().float().sum()
                              for v in losses.values()])
        ok = torch.isfinite(values)
        flags = None if checks is None else checks.flags()
        if flags is not None:
            ok = torch.cat([ok, flags.to(ok.device)])
        if bool(ok.all()):
            return
        if flags is not None and not bool(flags.all()):
            raise ValueError('TrackOcc.loss: the ground truth\'s voxel_counts (metainfo of '
                             'gt_occ, counted by PackTrackOccInputs) disagree with its arrays: '
                             + ', '.join(checks.failed(flags)) + '; a transform after the '
                             'packing changed gt_occ without counting it again')
        bad = [f'{k}={float(v):.4g}' for k, v in zip(losses, values) if not torch.isfinite(v)]
        raise FloatingPointError('TrackOcc: non-finite loss term(s) ' + ', '.join(bad) +
                                 ' (check the learning rate, AMP loss scale and input data)')
