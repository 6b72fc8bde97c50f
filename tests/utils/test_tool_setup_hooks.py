"""``load_tool_config``: a trackocc default hook set to None through ``--cfg-options`` is turned
off; MMEngine's own default hooks keep their None for the Runner to remove."""
import argparse
import os.path as osp

from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from trackocc.utils.tool_setup import load_tool_config

TINY = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'trackocc',
                'trackocc_tiny_synthetic.py')


class _Model(BaseModel):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def forward(self, *args, **kwargs):
        return {}


def _args(tmp_path, options):
    return argparse.Namespace(config=TINY, launcher='none', cfg_options=options,
                              work_dir=str(tmp_path), local_rank=0)


def test_a_trackocc_default_hook_set_to_none_is_off(tmp_path):
    cfg = load_tool_config(_args(tmp_path, None))
    assert cfg.default_hooks.garbage_collection.type == 'GarbageCollectionHook'
    cfg = load_tool_config(_args(tmp_path, {'default_hooks.garbage_collection': None,
                                            'default_hooks.timer': None}))
    assert 'garbage_collection' not in cfg.default_hooks
    assert 'timer' in cfg.default_hooks and cfg.default_hooks.timer is None
    # the Runner takes it: no GarbageCollectionHook, no timer (MMEngine removed it)
    runner = Runner(model=_Model(), work_dir=str(tmp_path), default_hooks=cfg.default_hooks,
                    default_scope='trackocc')
    names = [type(h).__name__ for h in runner.hooks]
    assert 'GarbageCollectionHook' not in names and 'IterTimerHook' not in names
    assert 'StreamThroughputHook' in names
