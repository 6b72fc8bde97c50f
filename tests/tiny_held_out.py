"""A tiny synthetic held-out set and a checkpoint of the tiny config's seeded random weights,
for tests of the held-out tools (``benchmark.py --data-root``, ``precision_scan.py``).
Importable because pytest puts tests/ on ``sys.path``."""
import os.path as osp
from typing import Tuple

import torch

from repo_files import REPO, load_module

TINY = osp.join(REPO, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


def make_tiny_held_out(tmp) -> Tuple[str, str]:
    """2 held-out sequences x 2 frames (``tools/create_data.py synthetic``, seed 5) under
    ``tmp/data`` and ``tmp/random_init.pth``; returns (data root, checkpoint)."""
    create_data = load_module('tools/create_data.py', 'create_data_tiny_held_out')
    root = str(tmp / 'data')
    assert create_data.main(['synthetic', '--out-dir', root, '--train-seqs', '0', '--val-seqs',
                             '2', '--frames-per-seq', '2', '--seed', '5', '--image-size', '192',
                             '128', '--side-height', '96', '--workers', '1',
                             '--no-progress']) == 0
    from trackocc.analysis.model_setup import build_model, load_config
    model = build_model(load_config(TINY), None, 'cpu')
    ckpt = str(tmp / 'random_init.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    return root, ckpt
