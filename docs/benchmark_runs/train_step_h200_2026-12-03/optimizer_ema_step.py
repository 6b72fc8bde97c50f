"""The paper model's optimizer step and EMA update on one GPU, pure PyTorch (no OpenMMLab):
AdamW with one parameter group per parameter (MMEngine's default with ``paramwise_cfg``)
against the groups merged by setting (``MergedGroupsOptimWrapperConstructor``), and the EMA
tensor by tensor (``avg.mul_(d); avg.add_(src * (1 - d))``) against the multi-tensor form of
``RampedDecayEMA.update_parameters`` (128 tensors per call). Checks that the results are
bit-equal and times each (CUDA events, median of 30 after 5 warm-up).

    python optimizer_ema_step.py paper_model_tensors.json OUT.json
"""
import json
import statistics
import sys

import torch


def timed(fn, iters=30, warmup=5):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def main(spec_file, out_file):
    spec = json.load(open(spec_file))
    dev = torch.device('cuda')
    g = torch.Generator(device=dev).manual_seed(0)
    params = [torch.randn(p['shape'], device=dev, generator=g) for p in spec['params']]
    mults = [p['lr_mult'] for p in spec['params']]
    grads = [torch.randn(p.shape, device=dev, generator=g) * 1e-2 for p in params]
    result = {'params': len(params)}

    def adamw(split):
        ps = [p.clone().requires_grad_(True) for p in params]
        if split:
            groups = [dict(params=[p], lr=2e-4 * m) for p, m in zip(ps, mults)]
        else:
            groups = [dict(params=[p for p, m in zip(ps, mults) if m == v], lr=2e-4 * v)
                      for v in sorted(set(mults))]
        opt = torch.optim.AdamW(groups, lr=2e-4, weight_decay=0.01)
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        return ps, opt

    finals = {}
    for name, split in (('per_parameter_groups', True), ('merged_groups', False)):
        ps, opt = adamw(split)
        result[f'adamw_{name}_groups'] = len(opt.param_groups)
        for _ in range(3):
            opt.step()
        finals[name] = [p.detach().clone() for p in ps]
        result[f'adamw_step_ms_{name}'] = timed(opt.step)
    result['adamw_bit_equal_after_3_steps'] = all(
        torch.equal(a, b) for a, b in zip(finals['per_parameter_groups'], finals['merged_groups']))

    state = [s for s in spec['state'] if s['dtype'] == 'torch.float32']
    src = [torch.randn(s['shape'], device=dev, generator=g) for s in state]
    avg0 = [torch.randn(s['shape'], device=dev, generator=g) for s in state]
    d = 0.9939152
    result['ema_tensors'] = len(src)

    def per_tensor(avgs):
        for a, s in zip(avgs, src):
            a.mul_(d)
            a.add_(s * (1.0 - d))

    def multi_tensor(avgs):
        for i in range(0, len(avgs), 128):
            a, s = avgs[i:i + 128], src[i:i + 128]
            torch._foreach_mul_(a, d)
            torch._foreach_add_(a, torch._foreach_mul(s, 1.0 - d))

    ema = {}
    for name, fn in (('per_tensor', per_tensor), ('multi_tensor', multi_tensor)):
        avgs = [a.clone() for a in avg0]
        fn(avgs)
        fn(avgs)
        ema[name] = avgs
        work = [a.clone() for a in avg0]
        result[f'ema_update_ms_{name}'] = timed(lambda: fn(work))
    result['ema_bit_equal_after_2_updates'] = all(
        torch.equal(a, b) for a, b in zip(ema['per_tensor'], ema['multi_tensor']))
    result['device'] = torch.cuda.get_device_name(0)
    result['torch'] = torch.__version__
    print(json.dumps(result, indent=1))
    json.dump(result, open(out_file, 'w'), indent=1)


if __name__ == '__main__':
    main(*sys.argv[1:3])
