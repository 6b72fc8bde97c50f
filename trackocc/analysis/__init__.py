"""Benchmark and profiling helpers shared by ``tools/analysis_tools`` and the engine hooks.

One concept per module: :mod:`.timing` (device clock, repeated-call timing, latency
statistics), :mod:`.memory` (peak memory), :mod:`.precision` (benchmark modes and autocast),
:mod:`.module_precision` (one sub-module at another precision than the rest, for
``precision_scan.py``), :mod:`.stages` (per-stage time of a TrackOcc frame),
:mod:`.streaming` (a synthetic stream of frames and the live-track cap),
:mod:`.held_out_stream` (the test set's real sequences preloaded and streamed, per-frame
tracks / occupancy / births), :mod:`.held_out_scoring` (their OccSTQ, the fast-mode accuracy
guard and where predictions differ), :mod:`.synthetic_timing` (the timed synthetic stream),
:mod:`.model_setup` (config and model for a benchmark), :mod:`.training` (the optimizer
wrapper and one training iteration of ``benchmark.py --train``), :mod:`.train_timing` (timed
training iterations and the schedule estimate), :mod:`.data_parallel` (``--train`` as one rank
of a data-parallel run), :mod:`.ab_variant` and :mod:`.ab_options` (A/B variants of the fast
path in one process and their ``--ab-*`` switches), :mod:`.host_ops` and
:mod:`.memory_traffic` (ops outside the stage modules, bytes moved per op) and
:mod:`.profiling` (torch.profiler tables of frames or training iterations, synchronisation
sites).
"""
