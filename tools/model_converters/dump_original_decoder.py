"""Run the original TrackOcc's mask decoder once and save weights, inputs and outputs.

Run with the reference environment (tools/parity/setup_reference_env.sh, Python 3.8)::

    .venv-ref/bin/python tools/model_converters/dump_original_decoder.py \
        --original /path/to/TrackOcc --out tests/data/original_mask_decoder_tiny.pth

Builds ``MaskOccDecoder`` from the original config's ``transformer_decoder`` (2 layers, the
tiny width 16 with 4 heads) with the head's ``reg_branches``, randomises every parameter
(norms and biases included, so that no term vanishes), runs it in eval mode on random
queries and a random (4, 4, 2) value volume, and saves ``{state_dict (original key names),
query, query_pos, value, reference_points, spatial_shape, outputs, ref_points}`` (sequence
first, as the original). tests/models/test_mask_decoder_residual.py checks that the
converted weights reproduce these outputs in trackocc's ``MaskDecoder``.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(os.path.dirname(HERE), 'parity')
CONFIG_REL = 'configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py'
EMBED, HEADS, LAYERS, NUM_QUERY, SHAPE = 16, 4, 2, 8, (4, 4, 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--original', required=True, help='checkout of the original TrackOcc')
    p.add_argument('--out', required=True)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    original = os.path.realpath(args.original)
    sys.path.insert(0, PARITY)
    sys.path.insert(0, original)
    import ref_ops  # noqa: E402
    ref_ops.install_cpu_ops()
    import models  # noqa: F401,E402  (the original's plugin)
    import torch
    from mmcv import Config
    from mmcv.cnn.bricks.transformer import build_transformer_layer_sequence
    from torch import nn

    cfg = Config.fromfile(os.path.join(original, CONFIG_REL))
    dcfg = cfg.model.pts_bbox_head.transformer_decoder
    dcfg.num_layers = LAYERS
    layer = dcfg.transformerlayers
    for attn in layer.attn_cfgs:
        attn.update(embed_dims=EMBED, num_heads=HEADS)
    layer.feedforward_channels = 2 * EMBED
    torch.manual_seed(args.seed)
    decoder = build_transformer_layer_sequence(dcfg)
    reg_branches = nn.ModuleList([nn.Linear(EMBED, 3) for _ in range(LAYERS)])
    with torch.no_grad():
        for module in (decoder, reg_branches):
            for name, param in module.named_parameters():
                if param.dim() > 1:
                    nn.init.xavier_normal_(param)
                elif 'norms' in name and name.endswith('weight'):
                    param.uniform_(0.5, 1.5)
                else:
                    param.normal_(0, 0.3)
    decoder.eval()
    reg_branches.eval()
    num_value = SHAPE[0] * SHAPE[1] * SHAPE[2]
    query = torch.randn(NUM_QUERY, 1, EMBED)
    query_pos = torch.randn(NUM_QUERY, 1, EMBED)
    value = torch.randn(num_value, 1, EMBED)
    ref = torch.rand(1, NUM_QUERY, 1, 3)
    with torch.no_grad():
        outs, refs = decoder(query=query, key=None, value=value, query_pos=query_pos,
                             reference_points=ref, spatial_shapes=torch.tensor([SHAPE]),
                             level_start_index=torch.tensor([0]), reg_branches=reg_branches)
    state = {'pts_bbox_head.transformer_decoder.' + k: v for k, v in decoder.state_dict().items()}
    state.update({'pts_bbox_head.reg_branches.' + k: v
                  for k, v in reg_branches.state_dict().items()})
    tmp = '{}.tmp-{}'.format(args.out, os.getpid())
    torch.save(dict(state_dict=state, query=query, query_pos=query_pos, value=value,
                    reference_points=ref, spatial_shape=list(SHAPE), outputs=list(outs),
                    ref_points=list(refs)), tmp)
    os.replace(tmp, args.out)
    print('{} decoder layers, {} tensors -> {}'.format(LAYERS, len(state), args.out))


if __name__ == '__main__':
    main()
