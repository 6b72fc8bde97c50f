"""The host's work in the paper model's optimizer step, multi-tensor (foreach) AdamW against
fused AdamW, on the CPU: the 393 trainable tensors of the paper model in the paper schedule's
two groups (lr x 0.1 for the image backbone and the sampling offsets), each one element, so
that the arithmetic is negligible and the time is the Python and dispatch work a GPU's host
does too. Each step is AmpOptimWrapper's: the loss scaler unscales, the gradients are clipped
(norm 35), the scaler steps and updates. Counted: host reads of tensor values in the scaler's
step and update (a device wait each on a GPU: the inf check's ``.item()``; on the CPU also
AdamW's step counts, which a GPU's foreach AdamW keeps on the host too). Timed: median of 200
steps after 20. A proxy: the CPU's foreach ops loop over the tensors one by one, a GPU's
launch one kernel per chunk of tensors.

    python step_host_work.py ../train_step_h200_2026-12-03/paper_model_tensors.json OUT.json
"""
import json
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trackocc.evaluation.functional import atomic_write_text


class Reads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ == '_local_scalar_dense':
            self.reads += 1
        return func(*args, **(kwargs or {}))


def measure(spec, fused, steps=200, warmup=20):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(1, generator=g)) for _ in spec['params']]
    mults = [p['lr_mult'] for p in spec['params']]
    groups = [dict(params=[p for p, m in zip(params, mults) if m == v], lr=2e-4 * v)
              for v in sorted(set(mults))]
    kwargs = dict(fused=True) if fused else dict(foreach=True)
    opt = torch.optim.AdamW(groups, lr=2e-4, weight_decay=0.01, **kwargs)
    scaler = torch.amp.GradScaler('cpu', init_scale=512.0)
    samples, reads = [], []
    for i in range(warmup + steps):
        scaler.scale(torch.ones(()))  # as the backward of the scaled loss (lazy scale)
        for p in params:
            p.grad = torch.randn(1, generator=g) * 512.0
        counter = Reads()
        start = time.perf_counter()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 35.0)
        with counter:
            scaler.step(opt)
            scaler.update()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            samples.append(elapsed * 1e3)
            reads.append(counter.reads)
    return dict(groups=len(opt.param_groups), tensors=len(params),
                step_ms_median=statistics.median(samples),
                host_reads_in_scaler_step=statistics.mode(reads))


def main(spec_file, out_file):
    spec = json.load(open(spec_file))
    result = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                  foreach=measure(spec, False), fused=measure(spec, True))
    text = json.dumps(result, indent=2)
    print(text)
    atomic_write_text(out_file, text + '\n')


if __name__ == '__main__':
    main(*sys.argv[1:])
