"""The host's work in the paper config's EMA update (``RampedDecayEMA.update_parameters``,
update_buffers=True) on the CPU: the paper model with every parameter and buffer cut to at
most 4 elements, so that the time is the Python and dispatch work a GPU's host does too.
Source tensors read through the owning modules (``source_tensors``, now) against
``model.state_dict()`` at every update (before), in one process, alternating rounds of 100
updates; median per update. Also checks that both give bit-equal averages.

    python ema_host_work.py OUT.json
"""
import json
import statistics
import sys
import time

import torch

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.engine.averaged_models import RampedDecayEMA
from trackocc.evaluation.functional import atomic_write_text

CFG = 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py'


def main(out_file):
    quiet_logger()
    model = build_model(load_config(CFG, None), None, 'cpu')
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.new_zeros(min(t.numel(), 4)) + 1
    emas = {}
    for name in ('modules', 'state_dict'):
        ema = RampedDecayEMA(model, decay=0.999, init_updates=10560, ramp_updates=2000,
                             update_buffers=True)
        if name == 'state_dict':  # the former path: no owning modules found
            ema._find_slots = lambda *args: None
        emas[name] = ema
    times = {name: [] for name in emas}
    for _ in range(3):
        for name, ema in emas.items():
            for _ in range(100):
                start = time.perf_counter()
                ema.update_parameters(model)
                times[name].append((time.perf_counter() - start) * 1e3)
        for p in model.parameters():  # the next round averages other values
            p.data.add_(0.01)
    equal = all(torch.equal(a, b) for a, b in zip(emas['modules'].module.state_dict().values(),
                                                  emas['state_dict'].module.state_dict().values()))
    result = dict(torch=torch.__version__, state_entries=len(emas['modules'].avg_parameters),
                  modules=len(list(model.modules())), averages_bit_equal=equal,
                  **{f'update_ms_median_{k}': statistics.median(v) for k, v in times.items()})
    text = json.dumps(result, indent=2)
    print(text)
    atomic_write_text(out_file, text + '\n')


if __name__ == '__main__':
    main(*sys.argv[1:])
