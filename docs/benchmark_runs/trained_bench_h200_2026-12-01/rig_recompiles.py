"""How often a compiled occupancy-encoder layer recompiles when the camera rig changes (CPU,
the tiny detector of tests/models/test_detector.py, four rigs x two frames). Run from the
repository root: TORCH_LOGS=recompiles python docs/benchmark_runs/trained_bench_h200_2026-12-01/
rig_recompiles.py [SUB_MODULE ...] (default occ_encoder.layers.0); output: rig_recompiles.txt."""
import os.path as osp
import sys
import time

import torch
import torch._dynamo.utils as dynamo_utils

ROOT = osp.join(osp.dirname(__file__), '..', '..', '..')
sys.path.insert(0, osp.join(ROOT, 'tests'))
from repo_files import load_module  # noqa: E402

from trackocc.utils.compile_modules import compile_modules  # noqa: E402

tiny = load_module(osp.join(ROOT, 'tests', 'models', 'test_detector.py'), 'tiny_detector')


def frame(t, seq, yaw):
    """Frame t of sequence seq with both cameras turned by ``yaw`` degrees (a new rig)."""
    f = tiny.make_frame(t, seq=seq, start=t == 0)
    cams = [tiny.camera(yaw), tiny.camera(yaw + 90.0)]
    cam2img = torch.stack([c[0] for c in cams])
    lidar2cam = torch.stack([c[1] for c in cams])
    f.set_metainfo(dict(cam2img=cam2img.numpy(), lidar2cam=lidar2cam.numpy(),
                        lidar2img=(cam2img @ lidar2cam).numpy()))
    return f


def main(names):
    model = tiny.build().eval()
    compile_modules(model, names, strict=True)
    with torch.no_grad():
        for seq, yaw in enumerate([0.0, 20.0, 45.0, 70.0]):
            for t in range(2):
                start = time.perf_counter()
                sample = tiny.make_clip([frame(t, seq, yaw)])
                model.predict(dict(imgs=tiny.images(1, 1, seed=t)), [sample])
                rows = tuple(model.occ_encoder._camera_cache[2].order.shape)
                graphs = dynamo_utils.counters['stats']['unique_graphs']
                print(f'rig {seq} frame {t}: {time.perf_counter() - start:5.1f} s, camera rows '
                      f'x padded queries {rows}, graphs compiled so far {graphs}', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:] or ['occ_encoder.layers.0'])
