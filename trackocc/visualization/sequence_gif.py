"""Writing a sequence of rendered frames as an animated GIF (Pillow)."""
import os
import os.path as osp
from typing import Iterable, Optional, Union

import numpy as np


def _as_rgb(frame: Union[np.ndarray, str]) -> np.ndarray:
    if isinstance(frame, (str, os.PathLike)):
        from PIL import Image
        try:
            with Image.open(frame) as im:
                return np.asarray(im.convert('RGB'))
        except OSError as err:
            raise OSError(f'write_gif: cannot read frame image {frame}: {err}') from None
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f'write_gif: frames must be (H, W, 3) uint8 RGB arrays or image '
                         f'paths, got {frame.dtype} array of shape {frame.shape}')
    return frame


def write_gif(frames: Iterable[Union[np.ndarray, str]], out_file: str, duration: float = 0.5,
              max_width: Optional[int] = 960, loop: int = 0) -> int:
    """Write ``frames`` (RGB uint8 arrays or paths of images) to the animated GIF ``out_file``.

    Args:
        duration: seconds each frame is shown.
        max_width: frames wider than this are scaled down (GIFs of full-size figures get
            large); None keeps the size. Frames of other sizes are scaled to the first one's.
        loop: 0 loops forever.

    Returns:
        The number of frames written. Pillow merges a frame identical to the previous one
        into it (longer duration); the visualizer's frames carry their frame number in the
        title, so they never are.
    """
    from PIL import Image
    images = []
    size = None
    for frame in frames:
        im = Image.fromarray(_as_rgb(frame))
        if size is None:
            size = im.size
            if max_width and size[0] > max_width:
                size = (int(max_width), max(1, round(size[1] * max_width / size[0])))
        if im.size != size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        images.append(im.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                  dither=Image.Dither.NONE))
    if not images:
        raise ValueError(f'write_gif: no frames to write to {out_file}')
    folder = osp.dirname(osp.abspath(out_file))
    os.makedirs(folder, exist_ok=True)
    images[0].save(out_file, save_all=True, append_images=images[1:],
                   duration=int(round(duration * 1000)), loop=loop, optimize=False,
                   disposal=1)
    return len(images)
