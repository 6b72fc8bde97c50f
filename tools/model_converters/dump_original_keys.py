"""List the state-dict keys and shapes of the original TrackOcc model (reference side).

Run with the reference environment (tools/parity/setup_reference_env.sh, Python 3.8)::

    .venv-ref/bin/python tools/model_converters/dump_original_keys.py \
        --original /path/to/TrackOcc --variant paper --out original_keys.json

It builds the model from the original's own config with the original's own code (the CPU
stand-ins of tools/parity/ref_ops.py replace its CUDA-only pieces; nothing is initialised or
run) and writes ``{"variant": ..., "keys": {name: shape}}`` in state-dict order. Variants:
``paper`` (the released model), ``small`` (tools/parity/small_config.py) and ``tiny`` (the
sizes of configs/trackocc/trackocc_tiny_synthetic.py; tests/data/original_tiny_keys.json is
this variant, used by tests/tools/test_original_checkpoint_converter.py).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(os.path.dirname(HERE), 'parity')
CONFIG_REL = 'configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py'

#: top-level variables of the original config for the ``tiny`` variant
TINY_OVERRIDES = {
    '_dim_': 32,
    '_pos_dim_': [12, 12, 8],
    'numC_Trans': 8,
    'num_queries': 20,
    'num_stuff_queries': 8,
    'data_config.input_size': (128, 352),
}


def tiny_model_edits(model):
    """Sizes the original config does not derive from its variables: the detector's and
    the mask embedding's width (defaults 256), ResNet-18 with 16 base channels, 1 block per
    3D stage, 4 heads / 4 points, ASPP width 16."""
    model.embed_dims = 32
    model.pts_bbox_head.out_channels = 32
    model.img_backbone.update(depth=18, base_channels=16)
    model.img_neck.in_channels = [16, 32, 64, 128]
    model.img_view_transformer.depthnet_cfg.aspp_mid_channels = 16
    model.volume_encoder_backbone.num_layer = [1, 1, 1]
    enc_attn = model.pts_bbox_head.transformer.encoder.transformerlayers.attn_cfgs
    enc_attn[0].num_heads = 4
    enc_attn[1].deformable_attention.update(num_heads=4, num_points=4)
    for cfg in model.pts_bbox_head.transformer_decoder.transformerlayers.attn_cfgs:
        cfg.num_heads = 4


def build_original_model(original, variant):
    """The original's model for ``variant`` (built, not initialised)."""
    sys.path.insert(0, PARITY)
    import ref_ops  # noqa: E402  (CPU stand-ins for the original's CUDA-only pieces)
    import small_config  # noqa: E402
    original = os.path.realpath(original)
    if not os.path.isfile(os.path.join(original, CONFIG_REL)):
        sys.exit('dump_original_keys: {} is not a checkout of the original TrackOcc ({} '
                 'missing)'.format(original, CONFIG_REL))
    sys.path.insert(0, original)
    ref_ops.install_cpu_ops()
    import models  # noqa: F401,E402  (the original's plugin: registers its modules)
    ref_ops.patch_original_for_cpu()
    from mmcv import Config
    from mmdet3d.models import build_model

    overrides = TINY_OVERRIDES if variant == 'tiny' else small_config.overrides_of(variant)
    path = os.path.join(original, CONFIG_REL)
    with open(path) as f:
        text = small_config.apply_overrides(f.read(), overrides, path)
    cfg = Config.fromstring(text, '.py')
    if variant == 'tiny':
        tiny_model_edits(cfg.model)
    return build_model(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--original', required=True, help='checkout of the original TrackOcc')
    p.add_argument('--variant', choices=('paper', 'small', 'tiny'), default='paper')
    p.add_argument('--out', required=True, help='JSON file to write')
    args = p.parse_args(argv)
    model = build_original_model(args.original, args.variant)
    keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    text = '{\n  "variant": %s,\n  "keys": {\n%s\n  }\n}\n' % (
        json.dumps(args.variant),
        ',\n'.join('    %s: %s' % (json.dumps(k), json.dumps(s)) for k, s in keys))
    tmp = '{}.tmp-{}'.format(args.out, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, args.out)
    print('{} keys of the {} original model -> {}'.format(len(keys), args.variant, args.out))


if __name__ == '__main__':
    main()
