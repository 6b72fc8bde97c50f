"""Benchmark and profiling helpers shared by ``tools/analysis_tools`` and the engine hooks.

One concept per module: :mod:`.timing` (device clock, repeated-call timing, latency
statistics), :mod:`.memory` (peak memory), :mod:`.precision` (benchmark modes and autocast),
:mod:`.stage_timer` (per-stage time of a TrackOcc frame), :mod:`.streaming` (a synthetic
stream of frames and the live-track cap), :mod:`.held_out_stream` (the test set's real
sequences preloaded and streamed, per-frame tracks / occupancy / births),
:mod:`.held_out_scoring` (their OccSTQ and the fast-mode accuracy guard),
:mod:`.synthetic_timing` (the timed synthetic stream), :mod:`.model_setup` (config and model
for a benchmark), :mod:`.training` (the optimizer wrapper and one training iteration of
``benchmark.py --train``), :mod:`.train_timing` (timed training iterations and the schedule
estimate), :mod:`.ab_variant` (A/B variants of the fast path in one process) and
:mod:`.profiling` (torch.profiler tables of frames or training iterations, synchronisation
sites).
"""
