"""ATen operator calls per stage of a streamed frame (the tiny config, random weights, CPU):
where the fast path's eager host work is. Each call is a dispatch on the host and, for most,
one kernel launch on CUDA (views are not). Run from the project's root:
    python docs/benchmark_runs/merge_graph_h200_2026-12-03/stage_ops_cpu.py [QUERY_BUDGET]
Counts over the last 2 of 6 frames (tracks carried, live tracks capped at 64); for "other"
(outside the stage modules) and "tracking", the innermost trackocc source line of each call."""
import collections
import sys
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trackocc.analysis.model_setup import build_model, load_config
from trackocc.analysis.stages import stage_modules
from trackocc.analysis.streaming import cap_live_tracks, move_to_frame, synthetic_stream

FRAMES, COUNTED = 6, 2
cfg = load_config('configs/trackocc/trackocc_tiny_synthetic.py')
if len(sys.argv) > 1:
    cfg.model.query_budget = int(sys.argv[1])
model = build_model(cfg, None, 'cpu').eval()
current = ['other']
calls = collections.Counter()
ops = collections.defaultdict(collections.Counter)
sites = collections.defaultdict(collections.Counter)
for stage, mods in stage_modules(model).items():
    for _, module in mods:
        module.register_forward_pre_hook(lambda *_, s=stage: current.__setitem__(0, s))
        module.register_forward_hook(lambda *_: current.__setitem__(0, 'other'))
model.register_stage_callback(
    lambda s, event: current.__setitem__(0, s if event == 'start' else 'other'))


class CountCalls(TorchDispatchMode):

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        stage = current[0]
        calls[stage] += 1
        ops[stage][str(func.overloadpacket)] += 1
        if stage in ('other', 'tracking'):
            ours = [f for f in traceback.extract_stack()
                    if '/trackocc/' in f.filename and 'stage_ops_cpu' not in f.filename]
            if ours:
                f = ours[-1]
                sites[stage][f"{f.filename.split('trackocc/')[-1]}:{f.lineno} {f.name}"] += 1
        return func(*args, **(kwargs or {}))


inputs, clip, frame = synthetic_stream(model)
model.reset_tracks()
counting = CountCalls()
with torch.no_grad():
    for i in range(FRAMES):
        move_to_frame(frame, i)
        if i == FRAMES - COUNTED:
            counting.__enter__()
        model.predict(inputs, [clip])
        cap_live_tracks(model, 64)
    counting.__exit__(None, None, None)
print(f'ops per frame (last {COUNTED} frames):', {k: v / COUNTED for k, v in calls.items()})
for stage in ('other', 'tracking', 'panoptic_merge'):
    print(stage, sorted(ops[stage].items(), key=lambda x: -x[1])[:40])
for stage in ('other', 'tracking'):
    print('==', stage)
    for site, n in sorted(sites[stage].items(), key=lambda x: -x[1])[:45]:
        print(f'{n / COUNTED:6.1f} {site}')
