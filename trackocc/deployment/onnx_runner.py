"""Streaming TrackOcc inference around an onnxruntime session of the per-frame network.

The exported graph (:mod:`.frame_network`, :mod:`.onnx_export`) computes one frame's decoder
outputs for given thing queries. Everything between frames stays in Python/PyTorch, with the
model's own modules and the same steps as :meth:`TrackOcc.predict`: ego-motion alignment of the
carried tracks, the runtime tracker (id birth, misses, death), the panoptic merge, the memory
bank and the query interaction module that build the next frame's queries. They act on a
varying set of tracks with data-dependent selections, which ONNX expresses poorly and which
are cheap next to the network.
"""
import copy
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from trackocc.models.trackers import StreamState
from .frame_network import (INPUT_NAMES, FrameGeometry, check_exportable, frame_geometry,
                            head_outputs, network_inputs)
from .onnx_export import onnx_session


class OnnxStreamingRunner:
    """Runs a TrackOcc stream with the per-frame network in onnxruntime.

    Args:
        model (TrackOcc): the detector the ONNX file was exported from (same weights); its
            tracking modules (query embedding, query interaction, memory bank) run here, on
            CPU, in eval mode. The runner keeps its own tracker and stream state, so the
            model can still be used on its own.
        onnx_file (str): the exported per-frame network.
        num_threads (int, optional): onnxruntime intra-op threads (default: its own).
        session: an existing ``onnxruntime.InferenceSession`` instead of ``onnx_file``.

    ``predict(inputs, data_samples)`` takes what :meth:`TrackOcc.predict` takes (after the
    data preprocessor) and writes ``pred_occ`` into the frame the same way.
    """

    def __init__(self, model: nn.Module, onnx_file: Optional[str] = None,
                 num_threads: Optional[int] = None, session=None) -> None:
        check_exportable(model)
        if (onnx_file is None) == (session is None):
            raise ValueError('OnnxStreamingRunner: give exactly one of onnx_file and session')
        self.model = model.cpu().eval()
        self.session = session if session is not None else onnx_session(onnx_file,
                                                                         num_threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ValueError(f'OnnxStreamingRunner: {onnx_file or "the session"} takes inputs '
                             f'{names}, expected {list(INPUT_NAMES)} (export it with '
                             'tools/deployment/export_onnx.py)')
        self.tracker = copy.deepcopy(model.tracker)
        self._geometry: Optional[Tuple[bytes, FrameGeometry]] = None
        self._state: Optional[StreamState] = None
        self.last_outputs: Optional[Dict] = None

    def reset(self) -> None:
        """Forget the stream (the next frame starts a sequence)."""
        self._state = None

    @property
    def stream_state(self) -> Optional[StreamState]:
        """What the runner carries to the next frame (as :attr:`TrackOcc.stream_state`):
        ``'pending'`` holds the tracks the last frame ended with."""
        return self._state

    def geometry(self, meta: dict) -> FrameGeometry:
        """Rig tables of a frame, rebuilt only when its camera matrices change."""
        key = self.model._geometry_key([meta])
        if self._geometry is None or self._geometry[0] != key:
            self._geometry = (key, frame_geometry(self.model, meta))
        return self._geometry[1]

    def run_network(self, imgs: Tensor, geometry: FrameGeometry, query: Tensor,
                    ref_pts: Tensor) -> Dict:
        """One session call.

        Args:
            imgs (Tensor): (N, 3, H, W) normalized images; query (Q, 2E); ref_pts (Q, 3)
                normalized.
        Returns:
            the head's output dict (one decoder layer, batch of 1) as CPU tensors.
        """
        feeds = {name: t.detach().cpu().numpy()
                 for name, t in zip(INPUT_NAMES, network_inputs(geometry, imgs, query,
                                                                 ref_pts))}
        outputs = self.session.run(None, feeds)
        return head_outputs([torch.from_numpy(np.ascontiguousarray(o)) for o in outputs])

    @torch.no_grad()
    def predict(self, inputs: dict, data_samples: list) -> list:
        """Stream one frame (``inputs['imgs']`` (1, 1, N, 3, H, W), one clip of one frame).

        Returns:
            ``data_samples``, the frame carrying ``pred_occ`` (``semantics`` uint8,
            ``instances`` int32, (X, Y, Z)); the network's outputs of the frame stay in
            ``last_outputs``.
        """
        imgs = inputs['imgs']
        if imgs.dim() != 6 or imgs.shape[:2] != (1, 1) or len(data_samples) != 1:
            raise ValueError('OnnxStreamingRunner.predict streams one frame of one sequence '
                             f'per call (images (1, 1, N, 3, H, W)), got {tuple(imgs.shape)} '
                             f'and {len(data_samples)} samples')
        self._predict_frame(imgs[0, 0].float().cpu(), data_samples[0].video_data_samples[0])
        return data_samples

    def _predict_frame(self, imgs: Tensor, frame) -> None:
        """:meth:`TrackOcc.stream_step` around the network in onnxruntime."""
        meta = frame.metainfo
        geometry = self.geometry(meta)
        self._state, semantics, instances, out = self.model.stream_step(
            self._state, self.tracker, meta,
            lambda tracks: self.run_network(imgs, geometry, tracks.query,
                                            tracks.ref_pts.sigmoid()))
        self.model.pack_prediction(frame, semantics, instances)
        self.last_outputs = out
