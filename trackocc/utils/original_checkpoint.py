"""Checkpoints of the original TrackOcc (mmcv 1.x / mmdet3d 1.0) in this package's layout.

The original (Tsinghua-MARS-Lab/TrackOcc, config ``trackocc_r50_704x256_3inst_3f_8gpu.py``)
names its parameters after its own module tree; here the occupancy encoder is a module of
the detector (the original kept it in the head), the decoder owns its reference-point
branches, and the trackers / ASPP / 3D blocks use mmcv and mmdet building blocks. This module

* reads a checkpoint file in any form the original wrote it (:func:`load_original_state_dict`):
  a plain state dict, an mmcv 1.x checkpoint (``state_dict`` + ``meta`` [+ ``optimizer``]),
  an EMA file of the original's ``MEGVIIEMAHook`` (``state_dict`` + ``updates``: the weights
  *are* the EMA weights; the hook writes them beside the regular checkpoints as
  ``iter_N_ema.pth`` / ``epoch_N_ema.pth``), a container with ``ema_state_dict`` /
  ``state_dict_ema``, and keys prefixed by ``module.`` (DDP) or ``teacher.`` (stripped
  like the original's ``test.py`` does);
* maps every key by :data:`RULES` (:func:`convert_state_dict`): renamed, folded into another
  tensor, or dropped with a reason; any other key is an error that names it;
* checks the result against a model's state dict (:func:`check_against_model`): every target
  key filled, nothing extra, shapes equal.

Folding: the original's transposed convolutions in ``up0``/``up1`` carry a bias and feed a
BatchNorm; here they have none. BN(y + b) with running mean mu equals BN(y) with running
mean mu - b (and in training the batch mean absorbs b), so b is subtracted from the BN's
``running_mean``.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ['OriginalCheckpointError', 'ConversionResult', 'RULES', 'load_original_state_dict',
           'select_state_dict', 'strip_wrapper_prefixes', 'convert_state_dict',
           'check_against_model', 'convert_checkpoint_file']

#: prefixes that wrappers put in front of the model's keys (DDP / ModelEMA; the original's
#: test.py strips ``module.`` and ``teacher.``)
WRAPPER_PREFIXES = ('module.', 'teacher.')
#: containers some EMA implementations use for the averaged weights
EMA_CONTAINERS = ('ema_state_dict', 'state_dict_ema')


class OriginalCheckpointError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the key(s)."""


@dataclass
class Rule:
    """One key pattern of the original layout (``re.fullmatch``) and what becomes of it.

    ``action``: ``'map'`` (rename to ``target``), ``'fold'`` (add into the tensor ``target``
    names; ``how`` says how) or ``'drop'`` (``how`` is the reason). ``target`` is a
    ``re.Match.expand`` template or a function of the match. ``when`` restricts the rule to
    matches for which it returns True (it also gets the conversion context).
    """
    pattern: str
    action: str
    target: object = None
    how: str = ''
    when: Optional[Callable] = None

    def __post_init__(self):
        self.regex = re.compile(self.pattern)

    def apply(self, key: str, ctx: dict) -> Optional[Tuple[str, Optional[str]]]:
        m = self.regex.fullmatch(key)
        if m is None or (self.when is not None and not self.when(m, ctx)):
            return None
        if self.action == 'drop':
            return 'drop', None
        target = self.target(m) if callable(self.target) else m.expand(self.target)
        return self.action, target


def _seq(m, group: int, names=('0.0', '1')) -> str:
    """'1' / '2' (fc1 / fc2 of a two-layer MLP) -> mmcv FFN's 'layers.0.0' / 'layers.1'."""
    return names[int(m.group(group)) - 1]


def _in_aspp(m, ctx) -> bool:
    return m.group(1) in ctx['aspp_indices']


_DN = r'img_view_transformer\.depth_net'
_ENC = r'pts_bbox_head\.transformer\.encoder\.layers\.(\d+)'
_DEC = r'pts_bbox_head\.transformer_decoder\.layers\.(\d+)'
_MHA = r'(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)'
_DEFORM = r'(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)'
_WB = r'(weight|bias)'

#: The parameter-name map, original -> here (first matching rule wins).
RULES: List[Rule] = [
    # image backbone and FPN: mmdet's ResNet / FPN in both
    Rule(r'(img_backbone|img_neck)\..+', 'map', r'\g<0>'),
    # BEVDepth depth net
    Rule(_DN + r'\.(reduce_conv\.[01]|context_conv|bn)\..+', 'map', r'\g<0>'),
    Rule(_DN + r'\.(depth|context)_mlp\.fc([12])\.' + _WB, 'map',
         lambda m: f'img_view_transformer.depth_net.{m.group(1)}_mlp.'
                   f'{"02"[int(m.group(2)) - 1]}.{m.group(3)}'),
    Rule(_DN + r'\.(depth|context)_se\.conv_(reduce|expand)\.' + _WB, 'map',
         r'img_view_transformer.depth_net.\1_se.\2.\3'),
    Rule(_DN + r'\.depth_conv\.(\d+)\.aspp([1-4])\.atrous_conv\.weight', 'map',
         lambda m: f'img_view_transformer.depth_net.depth_conv.{m.group(1)}.branches.'
                   f'{int(m.group(2)) - 1}.0.weight'),
    Rule(_DN + r'\.depth_conv\.(\d+)\.aspp([1-4])\.bn\.(.+)', 'map',
         lambda m: f'img_view_transformer.depth_net.depth_conv.{m.group(1)}.branches.'
                   f'{int(m.group(2)) - 1}.1.{m.group(3)}'),
    Rule(_DN + r'\.depth_conv\.(\d+)\.global_avg_pool\.([12])\.(.+)', 'map',
         r'img_view_transformer.depth_net.depth_conv.\1.image_pool.\2.\3'),
    Rule(_DN + r'\.depth_conv\.(\d+)\.conv1\.weight', 'map',
         r'img_view_transformer.depth_net.depth_conv.\1.fuse.0.weight', when=_in_aspp),
    Rule(_DN + r'\.depth_conv\.(\d+)\.bn1\.(.+)', 'map',
         r'img_view_transformer.depth_net.depth_conv.\1.fuse.1.\2', when=_in_aspp),
    # residual blocks (mmdet BasicBlock in both), the final 1x1 conv, DCN if configured
    Rule(_DN + r'\.depth_conv\.(\d+)\.(conv[12]|bn[12]|downsample\.\d+)\..+', 'map',
         r'\g<0>'),
    Rule(_DN + r'\.depth_conv\.(\d+)\.(weight|bias|conv_offset\.weight|conv_offset\.bias)',
         'map', r'\g<0>'),
    # 3D ResNet: the original's ConvModule blocks (conv1.conv / conv1.bn) -> mmdet BasicBlock
    Rule(r'volume_encoder_backbone\.layers\.(\d+)\.(\d+)\.conv([12])\.conv\.weight', 'map',
         r'volume_encoder_backbone.layers.\1.\2.conv\3.weight'),
    Rule(r'volume_encoder_backbone\.layers\.(\d+)\.(\d+)\.conv([12])\.bn\.(.+)', 'map',
         r'volume_encoder_backbone.layers.\1.\2.bn\3.\4'),
    Rule(r'volume_encoder_backbone\.layers\.\d+\.\d+\.downsample\.(conv|bn)\..+', 'map',
         r'\g<0>'),
    Rule(r'volume_encoder_neck\.conv\.(conv|bn)\..+', 'map', r'\g<0>'),
    # occupancy encoder: the original head's transformer and its input/output convs
    Rule(r'pts_bbox_head\.transformer\.(level_embeds|cams_embeds)', 'map', r'occ_encoder.\1'),
    Rule(_ENC + r'\.attentions\.0\.' + _DEFORM, 'map',
         r'occ_encoder.layers.\1.self_attn.\2.\3'),
    Rule(_ENC + r'\.attentions\.1\.deformable_attention\.'
         r'(sampling_offsets|attention_weights|value_proj)\.' + _WB, 'map',
         r'occ_encoder.layers.\1.cross_attn.deformable_attention.\2.\3'),
    Rule(_ENC + r'\.attentions\.1\.output_proj\.' + _WB, 'map',
         r'occ_encoder.layers.\1.cross_attn.output_proj.\2'),
    Rule(_ENC + r'\.ffns\.0\.layers\.(0\.0|1)\.' + _WB, 'map',
         r'occ_encoder.layers.\1.ffn.layers.\2.\3'),
    Rule(_ENC + r'\.norms\.([0-2])\.' + _WB, 'map', r'occ_encoder.layers.\1.norms.\2.\3'),
    Rule(r'pts_bbox_head\.positional_encoding\.(row|col|tub)_embed\.weight', 'map',
         r'occ_encoder.positional_encoding.\1_embed.weight'),
    Rule(r'pts_bbox_head\.decoder_input_projs\.' + _WB, 'map', r'occ_encoder.input_proj.\1'),
    Rule(r'pts_bbox_head\.enhance_projs\.' + _WB, 'map', r'occ_encoder.output_proj.\1'),
    Rule(r'pts_bbox_head\.enhance_conv\.conv\.' + _WB, 'map', r'occ_encoder.fuse_conv.conv.\1'),
    Rule(r'pts_bbox_head\.compact_proj\.' + _WB, 'map', r'occ_encoder.compact_proj.\1'),
    # mask-feature upsampling: Sequential(deconv, BN, ReLU, deconv, BN, ReLU) -> two
    # ConvModules without conv bias; the biases fold into the BN running means
    Rule(r'pts_bbox_head\.up([01])\.([03])\.weight', 'map',
         lambda m: f'occ_encoder.upsampler.up{m.group(1)}.{int(m.group(2)) // 3}.conv.weight'),
    Rule(r'pts_bbox_head\.up([01])\.([03])\.bias', 'fold',
         lambda m: f'occ_encoder.upsampler.up{m.group(1)}.{int(m.group(2)) // 3}.bn.running_mean',
         how='subtracted from the running mean of the BatchNorm it feeds'),
    Rule(r'pts_bbox_head\.up([01])\.([14])\.(.+)', 'map',
         lambda m: f'occ_encoder.upsampler.up{m.group(1)}.{int(m.group(2)) // 3}.bn.'
                   f'{m.group(3)}'),
    Rule(r'pts_bbox_head\.final_conv\.conv\.' + _WB, 'map',
         r'occ_encoder.upsampler.final_conv.conv.\1'),
    # mask decoder
    Rule(_DEC + r'\.attentions\.0\.' + _DEFORM, 'map',
         r'pts_bbox_head.decoder.layers.\1.cross_attn.\2.\3'),
    Rule(_DEC + r'\.attentions\.1\.attn\.' + _MHA, 'map',
         r'pts_bbox_head.decoder.layers.\1.self_attn.attn.\2'),
    Rule(_DEC + r'\.ffns\.0\.layers\.(0\.0|1)\.' + _WB, 'map',
         r'pts_bbox_head.decoder.layers.\1.ffn.layers.\2.\3'),
    Rule(_DEC + r'\.norms\.([0-2])\.' + _WB, 'map',
         r'pts_bbox_head.decoder.layers.\1.norms.\2.\3'),
    Rule(r'pts_bbox_head\.reg_branches\.(\d+)\.' + _WB, 'map',
         r'pts_bbox_head.decoder.reg_branches.\1.\2'),
    # head
    Rule(r'pts_bbox_head\.ref3d_predictor\.' + _WB, 'map', r'pts_bbox_head.stuff_ref_predictor.\1'),
    Rule(r'pts_bbox_head\.seg_pred_heads\.0\.([02])\.' + _WB, 'map',
         r'pts_bbox_head.sem_head.\1.\2'),
    Rule(r'pts_bbox_head\.cls_embed\.' + _WB, 'map', r'\g<0>'),
    Rule(r'pts_bbox_head\.mask_embed\.[024]\.' + _WB, 'map', r'\g<0>'),
    Rule(r'pts_bbox_head\.velo_branches\.\d+\.' + _WB, 'map', r'\g<0>'),
    Rule(r'pts_bbox_head\.stuff_embedding\.weight', 'map', r'\g<0>'),
    # query interaction module (MOTR QIM): torch MHA -> mmcv MultiheadAttention, linears -> FFNs
    Rule(r'query_interact\.self_attn\.' + _MHA, 'map', r'query_interaction.self_attn.attn.\1'),
    Rule(r'query_interact\.linear([12])\.' + _WB, 'map',
         lambda m: f'query_interaction.ffn.layers.{_seq(m, 1)}.{m.group(2)}'),
    Rule(r'query_interact\.linear_(pos|feat)([12])\.' + _WB, 'map',
         lambda m: f'query_interaction.ffn_{m.group(1)}.layers.{_seq(m, 2)}.{m.group(3)}'),
    Rule(r'query_interact\.(norm1|norm2|norm_pos|norm_feat)\.' + _WB, 'map',
         r'query_interaction.\1.\2'),
    # memory bank
    Rule(r'memory_bank\.save_proj\.' + _WB, 'map', r'\g<0>'),
    Rule(r'memory_bank\.temporal_attn\.' + _MHA, 'map', r'memory_bank.temporal_attn.attn.\1'),
    Rule(r'memory_bank\.temporal_fc([12])\.' + _WB, 'map',
         lambda m: f'memory_bank.ffn.layers.{_seq(m, 1)}.{m.group(2)}'),
    Rule(r'memory_bank\.temporal_norm([12])\.' + _WB, 'map', r'memory_bank.norm\1.\2'),
    # detector: track query embeddings and their reference-point branch
    Rule(r'query_embedding\.weight', 'map', r'\g<0>'),
    Rule(r'reference_points\.' + _WB, 'map', r'\g<0>'),
    # loss constants
    Rule(r'criterion\.code_weights', 'drop',
         how='constant of the original ClipMatcher (centre/velocity L1 code weights '
             '(1, 1, 1, .2, .2, .2)); here a setting of the track criterion\'s loss config'),
]


@dataclass
class ConversionResult:
    """``state_dict`` in this package's layout; per original key what became of it."""
    state_dict: 'OrderedDict[str, torch.Tensor]'
    mapped: Dict[str, str] = field(default_factory=dict)
    folded: Dict[str, str] = field(default_factory=dict)  # key -> tensor it was folded into
    dropped: Dict[str, str] = field(default_factory=dict)  # key -> reason

    def summary(self) -> str:
        return (f'{len(self.mapped)} mapped, {len(self.folded)} folded, '
                f'{len(self.dropped)} dropped -> {len(self.state_dict)} tensors')


def _name_keys(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


# ----------------------------------------------------------------------------- reading
def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def select_state_dict(ckpt, ema: bool = False, source: str = '<checkpoint>'
                      ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """The model weights inside a loaded checkpoint object.

    Args:
        ckpt: what ``torch.load`` returned.
        ema: take the EMA weights; an error if the file holds none.
        source: the file name, for messages.

    Returns:
        (state dict, info) where info has ``format`` ('plain', 'mmcv', 'megvii_ema' or
        'ema_container'), ``ema`` (whether the weights are EMA weights), ``updates`` (EMA
        updates or None), ``ema_available`` (the file also holds EMA weights that were not
        taken) and ``meta`` (the checkpoint's meta dict or {}).
    """
    if not isinstance(ckpt, Mapping):
        raise OriginalCheckpointError(f'{source}: expected a dict (state dict or checkpoint), '
                                      f'got {type(ckpt).__name__}')
    info = dict(format=None, ema=False, updates=None, ema_available=False, meta={})
    if _is_state_dict(ckpt):
        if ema:
            raise OriginalCheckpointError(
                f'{source}: a plain state dict holds no separate EMA weights; the original\'s '
                'MEGVIIEMAHook saves them to their own files (iter_N_ema.pth / epoch_N_ema.pth), '
                'convert such a file')
        info['format'] = 'plain'
        return OrderedDict(ckpt), info
    meta = ckpt.get('meta')
    info['meta'] = dict(meta) if isinstance(meta, Mapping) else {}
    ema_key = next((k for k in EMA_CONTAINERS if k in ckpt), None)
    if 'state_dict' in ckpt and 'updates' in ckpt:  # MEGVIIEMAHook.save_checkpoint(_iter)
        info.update(format='megvii_ema', ema=True, updates=ckpt['updates'])
        chosen = 'state_dict'
    elif ema and ema_key is not None:
        info.update(format='ema_container', ema=True, updates=ckpt.get('steps'))
        chosen = ema_key
    elif ema:
        raise OriginalCheckpointError(
            f'{source}: no EMA weights in this checkpoint (top-level keys: '
            f'{_name_keys([str(k) for k in ckpt])}); the original\'s MEGVIIEMAHook saves them '
            'to separate files iter_N_ema.pth / epoch_N_ema.pth ({state_dict, updates}), '
            'convert such a file')
    elif 'state_dict' in ckpt:
        info.update(format='mmcv', ema_available=ema_key is not None)
        chosen = 'state_dict'
    else:
        raise OriginalCheckpointError(
            f'{source}: neither a state dict nor a checkpoint with a "state_dict" entry '
            f'(top-level keys: {_name_keys([str(k) for k in ckpt])})')
    state = ckpt[chosen]
    if not _is_state_dict(state):
        bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)] \
            if isinstance(state, Mapping) else []
        raise OriginalCheckpointError(
            f'{source}: "{chosen}" is not a non-empty mapping of names to tensors'
            + (f' (not tensors: {_name_keys(bad)})' if bad else ''))
    return OrderedDict(state), info


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor], source: str = '<checkpoint>'
                           ) -> 'OrderedDict[str, torch.Tensor]':
    """Remove leading ``module.`` / ``teacher.`` (repeatedly) from every key."""
    out = OrderedDict()
    for key, value in state_dict.items():
        new = key
        while new.startswith(WRAPPER_PREFIXES):
            new = new.split('.', 1)[1]
        if new in out:
            raise OriginalCheckpointError(
                f'{source}: key {key!r} collides with another key once the wrapper prefixes '
                f'{WRAPPER_PREFIXES} are removed ({new!r})')
        out[new] = value
    return out


def load_original_state_dict(path: str, ema: bool = False
                             ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Read a checkpoint file of the original (see :func:`select_state_dict`), wrapper
    prefixes removed. Loaded with ``weights_only=True`` (plus trackocc's allow-list)."""
    from .checkpoint_compat import register_checkpoint_safe_globals
    register_checkpoint_safe_globals()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise OriginalCheckpointError(f'{path}: no such file') from None
    except Exception as exc:  # unpickling refused or a damaged file
        raise OriginalCheckpointError(
            f'{path}: cannot be read as a torch checkpoint with weights_only=True '
            f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""})') from exc
    state_dict, info = select_state_dict(ckpt, ema=ema, source=path)
    return strip_wrapper_prefixes(state_dict, source=path), info


# ----------------------------------------------------------------------------- conversion
def _context(keys: Sequence[str]) -> dict:
    aspp = set()
    pattern = re.compile(_DN + r'\.depth_conv\.(\d+)\.aspp1\.')
    for key in keys:
        m = pattern.match(key)
        if m:
            aspp.add(m.group(1))
    return dict(aspp_indices=aspp)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = '<checkpoint>',
                       rules: Sequence[Rule] = RULES) -> ConversionResult:
    """Original layout -> this package's layout.

    Raises:
        OriginalCheckpointError: keys no rule accounts for (all named), two keys mapped to
            the same name, a fold whose target is missing or has another shape.
    """
    ctx = _context(list(state_dict))
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    result = ConversionResult(out)
    unknown, folds = [], []
    for key, value in state_dict.items():
        for rule in rules:
            hit = rule.apply(key, ctx)
            if hit is not None:
                break
        else:
            unknown.append(key)
            continue
        action, target = hit
        if action == 'drop':
            result.dropped[key] = rule.how
        elif action == 'fold':
            folds.append((key, target, rule.how))
        else:
            if target in out:
                other = next(k for k, t in result.mapped.items() if t == target)
                raise OriginalCheckpointError(
                    f'{source}: keys {other!r} and {key!r} both map to {target!r}')
            out[target] = value
            result.mapped[key] = target
    if unknown:
        raise OriginalCheckpointError(
            f'{source}: {len(unknown)} key(s) not in the original TrackOcc layout known to the '
            f'converter: {_name_keys(unknown)}')
    for key, target, how in folds:
        into = out.get(target)
        value = state_dict[key]
        if into is None:
            raise OriginalCheckpointError(
                f'{source}: {key!r} must be folded into {target!r} ({how}), which the '
                'checkpoint does not have')
        if into.shape != value.shape:
            raise OriginalCheckpointError(
                f'{source}: {key!r} has shape {tuple(value.shape)}, the tensor it folds into '
                f'({target!r}) {tuple(into.shape)}')
        out[target] = into - value.to(into.dtype)
        result.folded[key] = target
    return result


def check_against_model(state_dict: Mapping[str, torch.Tensor],
                        model_state: Mapping[str, object], source: str = '<checkpoint>'
                        ) -> None:
    """Every key of ``model_state`` (a model's ``state_dict()``, or name -> shape) filled
    by ``state_dict`` with the same shape, and nothing else; else an error naming them."""
    def shape(v):
        return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)

    missing = [k for k in model_state if k not in state_dict]
    extra = [k for k in state_dict if k not in model_state]
    mismatched = [f'{k} {tuple(state_dict[k].shape)} vs {shape(model_state[k])}'
                  for k in model_state
                  if k in state_dict and tuple(state_dict[k].shape) != shape(model_state[k])]
    problems = []
    if missing:
        problems.append(f'{len(missing)} model key(s) not filled: {_name_keys(missing)}')
    if extra:
        problems.append(f'{len(extra)} converted key(s) the model does not have: '
                        f'{_name_keys(extra)}')
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatch(es) (converted vs model): '
                        f'{_name_keys(mismatched)}')
    if problems:
        raise OriginalCheckpointError(f'{source}: the converted weights do not fit the model: '
                                      + '; '.join(problems))


def convert_checkpoint_file(path: str, ema: bool = False,
                            model_state: Optional[Mapping[str, object]] = None
                            ) -> Tuple[ConversionResult, dict]:
    """:func:`load_original_state_dict` + :func:`convert_state_dict` (+
    :func:`check_against_model` when ``model_state`` is given)."""
    state_dict, info = load_original_state_dict(path, ema=ema)
    result = convert_state_dict(state_dict, source=path)
    if model_state is not None:
        check_against_model(result.state_dict, model_state, source=path)
    return result, info
