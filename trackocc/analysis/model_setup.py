"""Config and model of a benchmark run: random weights (no pretrained download) unless a
checkpoint is given, built in the config's default scope."""
from typing import Optional

import torch


def quiet_logger(name: str = 'trackocc_benchmark') -> None:
    """Make a WARNING-level MMLogger current (no per-parameter ``init_weights`` listing)."""
    from mmengine.logging import MMLogger
    if not MMLogger.check_instance_created(name):
        MMLogger.get_instance(name, log_level='WARNING')


def load_config(path: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile(path)`` with ``cfg_options`` merged and its default scope
    (``trackocc``: parts are imported on first use) made current."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'trackocc'))
    return cfg


def build_model(cfg, checkpoint: Optional[str], device: str,
                strict: bool = False) -> torch.nn.Module:
    """``cfg.model`` on ``device``, initialised with seed 0 (a ``Pretrained`` image-backbone
    init is dropped) and then loaded from ``checkpoint`` if given: non-strict, or with
    ``strict`` only a checkpoint whose keys and shapes fit the model (else ``RuntimeError`` /
    ``OSError`` naming the file)."""
    from trackocc.registry import MODELS
    model_cfg = cfg.model.copy()
    backbone = model_cfg.get('img_backbone', {})
    if isinstance(backbone.get('init_cfg'), dict) and \
            backbone['init_cfg'].get('type') == 'Pretrained':
        backbone['init_cfg'] = None
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    if checkpoint:
        from mmengine.runner import load_checkpoint
        if strict:
            from trackocc.utils.tool_setup import check_checkpoint_matches
            check_checkpoint_matches(model, checkpoint)
        load_checkpoint(model, checkpoint, map_location='cpu', strict=strict,
                        logger='silent' if strict else 'current')
    return model.to(device)


def set_query_budget(model, budget: Optional[int], max_live_tracks: Optional[int]) -> None:
    """``model.query_budget = budget``; ``max_live_tracks``: the live-track cap of a synthetic
    stream, which must leave room for the fresh queries (None: no check, e.g. held-out)."""
    if budget is None:
        return
    try:
        model.query_budget = budget
    except ValueError as err:
        raise SystemExit(f'error: --query-budget: {err}') from err
    if max_live_tracks is None:
        return
    if max_live_tracks <= 0:
        raise SystemExit('error: --query-budget needs a --max-live-tracks cap > 0 (random '
                         'weights grow the track set every frame)')
    need = model.num_thing_queries + max_live_tracks
    if budget < need:
        raise SystemExit(f'error: --query-budget {budget} is less than the {need} thing queries '
                         f'a frame can have ({model.num_thing_queries} fresh + '
                         f'--max-live-tracks {max_live_tracks})')
