"""What tools/train.py and tools/test.py share: config loading and runner construction."""
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .distributed import adapt_config_to_cpu_distributed, init_cpu_process_group


def load_tool_config(args) -> Config:
    """Read ``args.config`` and apply ``--launcher``, ``--cfg-options`` and ``--work-dir``
    (default ``./work_dirs/<config name>``); export ``LOCAL_RANK`` from ``--local-rank``."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """Start the process group (gloo on CPU-only machines) and build the configured runner."""
    adapt_config_to_cpu_distributed(cfg, cfg.launcher)
    init_cpu_process_group(cfg.launcher)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
