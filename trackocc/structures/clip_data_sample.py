"""A clip of frames: :class:`ClipDataSample`, mmdet's ``TrackDataSample`` without the cost of
its ``video_data_samples`` setter.

mmdet 3.3's setter evaluates ``f'{value[0]}'`` on every assignment (a message string left as a
statement after its assert), so each time a clip's frames are set, ``repr`` of the first frame
is built: every tensor of it printed, and for CUDA tensors a device-to-host copy each. Setting
happens on every ``TrackDataSample.to()`` (twice: ``new()`` and ``set_data``), i.e. in every
training and test iteration when the data preprocessor moves the batch to the device:
~1700 host synchronisations per training iteration of the paper config on an H200
(``benchmark.py --train --profile``, docs/benchmark.md, "Training profile"). This subclass
sets the frames the same way without building the string; everything else is inherited.

It also has ``pin_memory()``, which the DataLoader's pin-memory thread calls
(``pin_memory=True``): the ground truth of a training clip (~16 MB a frame at the paper's
grid) is then copied to the GPU asynchronously, as the images are, instead of from pageable
memory, where each copy holds the host until the GPU has taken it.
"""
from typing import Any, List

import torch
from mmdet.structures import DetDataSample, TrackDataSample
from mmengine.structures import BaseDataElement


def pin_data(value: Any) -> Any:
    """``value`` with every CPU tensor in it in page-locked (pinned) memory: tensors, data
    elements (a new element of the same class and metainfo), lists, tuples and dicts are
    followed; anything else, and tensors pinned already or on a device, are kept as they
    are. Needs an accelerator (``Tensor.pin_memory``)."""
    if isinstance(value, torch.Tensor):
        if value.device.type != 'cpu' or value.is_pinned():
            return value
        return value.pin_memory()
    if isinstance(value, BaseDataElement):
        pinned = value.new()
        pinned.set_data({key: pin_data(item) for key, item in value.items()})
        return pinned
    if isinstance(value, list):
        return [pin_data(item) for item in value]
    if isinstance(value, tuple):  # a named tuple keeps its class
        items = [pin_data(item) for item in value]
        return type(value)(*items) if hasattr(value, '_fields') else tuple(items)
    if isinstance(value, dict):
        return {key: pin_data(item) for key, item in value.items()}
    return value


class ClipDataSample(TrackDataSample):
    """``TrackDataSample`` whose ``video_data_samples`` setter formats nothing.

    Same fields, keys, ``to()`` / ``clone()`` / ``new()`` results and errors for wrong types as
    the parent; the frames are a list of ``DetDataSample`` (a single one is wrapped).
    ``pin_memory()`` gives the clip with its tensors pinned (:func:`pin_data`).
    """

    def pin_memory(self) -> 'ClipDataSample':
        """The clip (same metainfo and frames) with every tensor in pinned memory, as the
        DataLoader's ``pin_memory=True`` asks of a batch's objects."""
        return pin_data(self)

    @property
    def video_data_samples(self) -> List[DetDataSample]:
        return self._video_data_samples

    @video_data_samples.setter
    def video_data_samples(self, value: List[DetDataSample]) -> None:
        if isinstance(value, DetDataSample):
            value = [value]
        if not isinstance(value, list):
            raise TypeError('ClipDataSample: video_data_samples must be a list of '
                            f'DetDataSample, got {type(value).__name__}')
        bad = [type(v).__name__ for v in value if not isinstance(v, DetDataSample)]
        if not value or bad:
            raise TypeError('ClipDataSample: video_data_samples must be a non-empty list of '
                            f'DetDataSample, got {bad or "an empty list"}')
        self.set_field(value, '_video_data_samples', dtype=list)

    @video_data_samples.deleter
    def video_data_samples(self) -> None:
        del self._video_data_samples

    @classmethod
    def from_track_sample(cls, sample: TrackDataSample) -> 'ClipDataSample':
        """The same clip (metainfo, frames and other fields, not copied) as a
        :class:`ClipDataSample`; ``sample`` itself when it is one already."""
        if isinstance(sample, cls):
            return sample
        clip = cls(metainfo=sample.metainfo)
        for key in sample.keys():
            setattr(clip, key, getattr(sample, key))
        return clip
