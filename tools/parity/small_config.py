"""Model-size variants of the parity runs, shared by the reference side and trackocc's side.

The original config (``configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py``) derives every
size from a few top-level variables. A variant is a dict of overrides of those variables, keyed
by the original's own variable names (``'a.b.c'`` = key ``'c'`` of key ``'b'`` of the dict
variable ``a``):

* ``paper``: no override, the released model.
* ``small``: a narrower model for quick runs (about 4x less work per frame): embedding width
  128 (``_dim_``, so also the FPN width, the depth-net width and the FFN width ``2 * _dim_``),
  positional-encoding split [48, 48, 32], 16 lifted channels (``numC_Trans``), 50 thing and 20
  stuff queries, 128 x 352 input images. Two widths are constructor defaults that the config
  does not derive from ``_dim_`` (the detector's ``embed_dims``: track queries, memory bank,
  query interaction; the head's mask-embedding ``out_channels``), so the variant sets them
  too. The occupancy grid, the ResNet-50 and the number of layers do not change, so every
  parameter of the paper model has a counterpart.

:func:`apply_overrides` rewrites the original config's source text so that each override is
assigned right after the variable's own assignment, and every later line that derives from it
(``_ffn_dim_ = _dim_ * 2``, ``in_channels=numC_Trans*7``, ...) sees the new value. trackocc's
side maps the same names onto its own config. Plain Python (no torch or mmcv import).
"""
import ast

#: the reduced variant; keys are variable names of the original config
SMALL_OVERRIDES = {
    '_dim_': 128,
    '_pos_dim_': [48, 48, 32],
    'numC_Trans': 16,
    'num_queries': 50,
    'num_stuff_queries': 20,
    'data_config.input_size': (128, 352),
    # the detector's own width (its query embedding, memory bank and query interaction) is
    # not derived from _dim_ in the original config: TrackOcc(embed_dims=256) by default
    'model.embed_dims': 128,
    # nor is the width of the head's mask embedding (TrackOccHead(out_channels=256)), which must
    # equal the width of the mask features (_dim_)
    'model.pts_bbox_head.out_channels': 128,
}

VARIANTS = {'paper': {}, 'small': SMALL_OVERRIDES}


def overrides_of(name):
    """Overrides of variant ``name`` ('paper' or 'small')."""
    if name not in VARIANTS:
        raise KeyError(f'unknown config variant {name!r}; expected one of {sorted(VARIANTS)}')
    return dict(VARIANTS[name])


def apply_overrides(source, overrides, filename='<config>'):
    """Config source text with ``overrides`` assigned after each variable's definition.

    Args:
        source: text of an mmcv-style Python config.
        overrides: ``{'var': value}`` or ``{'var.key.subkey': value}`` (keys of nested dicts);
            values are written with ``repr`` (literals only).
        filename: used in error messages.

    Returns:
        The new source text.

    Raises:
        KeyError: a variable is not assigned at the top level of the config.
        ValueError: a value's ``repr`` is not a Python literal.
    """
    tree = ast.parse(source, filename=filename)
    last_line = {}  # variable -> last line of its (last) top-level assignment
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    last_line[target.id] = node.end_lineno
    inserts = {}
    for key, value in overrides.items():
        var, *subs = key.split('.')
        if var not in last_line:
            raise KeyError(f'{filename}: no top-level assignment of {var!r} to override')
        text = repr(value)
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f'override {key!r}: {text} is not a Python literal') from exc
        stmt = var + ''.join(f'[{s!r}]' for s in subs) + f' = {text}'
        inserts.setdefault(last_line[var], []).append(stmt + '  # parity override')
    lines = source.splitlines()
    out = []
    for no, line in enumerate(lines, start=1):
        out.append(line)
        out.extend(inserts.get(no, []))
    return '\n'.join(out) + '\n'
