"""Batch clips of multi-camera images for the TrackOcc model (no test-time-augmentation logic)."""
from typing import Optional, Sequence

import torch
from mmdet.structures import TrackDataSample
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import BaseDataElement
from trackocc.registry import MODELS

from ...structures.clip_data_sample import ClipDataSample


@MODELS.register_module()
class TrackOccDataPreprocessor(BaseDataPreprocessor):
    """Move a collated batch of clips to the device, stack and normalize the images.

    Input (``pseudo_collate`` of dataset items): ``dict(inputs=dict(img=[B x uint8 (T, N, 3, H,
    W)]), data_samples=[B x TrackDataSample])``; a list of B ``dict(img=...)`` is accepted too.
    Output: ``dict(inputs=dict(imgs=float32 (B, T, N, 3, H, W)), data_samples=[...])``. In
    training every tensor of the data samples (gt occupancy, depth) is moved to the model's
    device; in testing and validation they stay where they are (the host): ``predict`` reads
    only their metainfo, and the metric counts on the host, so moving the ground truth there
    and back cost two synchronous copies of it per frame. Other input keys (e.g. ``points``)
    are passed through as lists.

    Unlike ``Det3DDataPreprocessor`` a list is never taken for test-time augmentation: one list
    entry is one batch element (one clip).

    Args:
        mean, std (sequence[float]): Per-channel normalization, in the order of the channels
            after the optional swap.
        bgr_to_rgb / rgb_to_bgr (bool): Swap channels 0 and 2 before normalizing (the reference
            fed BGR to an RGB-normalized backbone; ``rgb_to_bgr=True`` reproduces that).
        non_blocking (bool): Asynchronous host-to-device copies.
        move_test_samples (bool): Move the data samples to the device in testing too (what
            mmengine's preprocessors do). Defaults to False.
    """

    def __init__(self,
                 mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375),
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 non_blocking: Optional[bool] = False,
                 move_test_samples: bool = False) -> None:
        super().__init__(non_blocking=non_blocking)
        self.move_test_samples = move_test_samples
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError('bgr_to_rgb and rgb_to_bgr cannot both be True')
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f'mean and std need 3 values, got {mean} and {std}')
        self.swap_rb = bgr_to_rgb or rgb_to_bgr
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)

    @staticmethod
    def _gather_inputs(inputs) -> dict:
        if isinstance(inputs, dict):
            return dict(inputs)
        if isinstance(inputs, (list, tuple)) and all(isinstance(x, dict) for x in inputs):
            keys = inputs[0].keys() if inputs else ()
            return {k: [x[k] for x in inputs] for k in keys}
        raise TypeError('TrackOccDataPreprocessor: inputs must be dict(img=[B tensors]) or a '
                        f'list of dicts, got {type(inputs).__name__}')

    def stack_images(self, imgs) -> torch.Tensor:
        """List of B (T, N, 3, H, W) (or a (B, T, N, 3, H, W) tensor) -> normalized float on
        the device (a host batch is copied to a CUDA device from pinned memory, asynchronously:
        pinned here unless the DataLoader's ``pin_memory`` did it; one clip is not copied to
        be stacked, so its pinned memory is the copy's source)."""
        if isinstance(imgs, torch.Tensor):
            batch = imgs
        elif len(imgs) == 1:
            batch = imgs[0].unsqueeze(0)
        else:
            shapes = {tuple(img.shape) for img in imgs}
            if len(shapes) != 1:
                raise ValueError('TrackOccDataPreprocessor: clips of one batch differ in '
                                 f'(T, N, 3, H, W): {sorted(shapes)}')
            batch = torch.stack(list(imgs))
        if batch.dim() != 6 or batch.shape[3] != 3:
            raise ValueError('TrackOccDataPreprocessor: expected images (B, T, N, 3, H, W), got '
                             f'{tuple(batch.shape)}')
        if self.device.type == 'cuda' and batch.device.type == 'cpu':
            # from pinned memory the copy is queued on the stream: the host does not wait for
            # the previous frame's kernels before it launches this one's
            if not batch.is_pinned():
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
        batch = batch.to(self.device, non_blocking=self._non_blocking).float()
        if self.swap_rb:
            batch = batch.flip(3)
        return (batch - self.mean) / self.std

    def cast_data(self, data):
        """mmengine's ``cast_data``, with every ``TrackDataSample`` moved as a
        :class:`ClipDataSample` (mmdet's would build ``repr`` of its first frame on the way:
        one host synchronisation per tensor on CUDA), and data samples copied to a CUDA
        device with ``non_blocking=True``: from pinned memory (the DataLoader's
        ``pin_memory=True`` calls :meth:`ClipDataSample.pin_memory`) the copies are queued
        on the stream and the host goes on; from pageable memory they are what they were."""
        if isinstance(data, TrackDataSample):
            data = ClipDataSample.from_track_sample(data)
        if isinstance(data, BaseDataElement) and self.device.type == 'cuda':
            return data.to(self.device, non_blocking=True)
        return super().cast_data(data)

    def forward(self, data: dict, training: bool = False) -> dict:
        """Preprocess one collated batch; outside ``training`` the data samples stay on the
        host unless ``move_test_samples``."""
        inputs = self._gather_inputs(data['inputs'])
        if 'img' not in inputs:
            raise KeyError(f"TrackOccDataPreprocessor: no 'img' in inputs (keys {sorted(inputs)})")
        # the images reach stack_images on the host (its copy from pinned memory), the rest
        # is moved as mmengine does
        out_inputs = {k: self.cast_data(v) for k, v in inputs.items() if k != 'img'}
        out_inputs['imgs'] = self.stack_images(inputs['img'])
        samples = data.get('data_samples')
        if training or self.move_test_samples:
            samples = self.cast_data(samples)
        return dict(inputs=out_inputs, data_samples=samples)
