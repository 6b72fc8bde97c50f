"""Bytes that one training forward pass of a config reads and writes, by op, module and line.

    python docs/benchmark_runs/clip_feature_batch_cpu_2026-12-04/train_traffic.py CONFIG \
        > traffic.json

The paper config's ``model.loss`` on one synthetic 3-frame clip under bf16 autocast on the
CPU, recorded by ``trackocc.analysis.memory_traffic.record_traffic`` (a device-free proxy of
the GPU time of memory-bound ops; the 3D convolutions run natively as on a GPU). The custom
ops run their PyTorch references here (the spatial cross-attention and the 3D deformable
attention are CUDA kernels on a GPU), so their lines overstate what a GPU moves; the other
lines are the GPU's code. Needs ~20 GB of memory for the paper config.
"""
import json
import sys

import torch

from trackocc.analysis.memory_traffic import record_traffic
from trackocc.analysis.train_ops import native_3d_convolutions
from training_clip import model_and_clip


def main():
    model, data = model_and_clip(sys.argv[1])
    with native_3d_convolutions(), torch.autocast('cpu', dtype=torch.bfloat16), \
            record_traffic(model, depth=1, lines=True) as rec:
        model(**data, mode='loss')
    print(json.dumps(dict(config=sys.argv[1], **rec.summary(top=40)), indent=1))


if __name__ == '__main__':
    main()
