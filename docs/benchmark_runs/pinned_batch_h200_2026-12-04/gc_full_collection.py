"""Cost of one full garbage collection once a config's model is built, before and after
gc.freeze() (twelfth session, CPU machine). Run from the project root:
    python docs/benchmark_runs/pinned_batch_h200_2026-12-04/gc_full_collection.py CONFIG
"""
import gc
import sys
import time

from trackocc.analysis.model_setup import build_model, load_config


def full_collections_ms(runs: int = 3) -> list:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        gc.collect()
        times.append(round(1e3 * (time.perf_counter() - start), 1))
    return times


if __name__ == '__main__':
    model = build_model(load_config(sys.argv[1], None), None, 'cpu')
    gc.collect()
    print(f'tracked objects {len(gc.get_objects())}; full collection ms {full_collections_ms()}')
    gc.freeze()
    print(f'after gc.freeze(): full collection ms {full_collections_ms()}')
