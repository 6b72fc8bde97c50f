# The synthetic learning check (trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py) without the
# memory bank: carried tracks go from one frame to the next through the query interaction
# module only. For the memory-bank ablation of tools/analysis_tools/learning_check.sh (the two
# runs differ by the memory bank only).
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py']

model = dict(memory_bank=None)
