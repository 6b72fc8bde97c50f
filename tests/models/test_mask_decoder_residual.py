"""MaskDecoderLayer self-attention residual: the original TrackOcc's (cross-attention output
before ``norms[0]``) against the standard post-norm one (the normalised query).

The original layer (``models/layers/mask_occ_decoder.py``, operation order cross_attn, norm,
self_attn, norm, ffn, norm) sets ``identity = query`` after the cross-attention and hands it
to mmcv's ``MultiheadAttention`` as the residual, while the attention itself runs on the
normalised query. The expected outputs below are written out with plain tensor algebra, and
the last test compares with outputs of the original's own decoder code
(tests/data/original_mask_decoder_tiny.pth, tools/model_converters/dump_original_decoder.py).
"""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from trackocc.models.layers.mask_decoder import MaskDecoder, MaskDecoderLayer
from trackocc.utils.original_checkpoint import convert_state_dict

E, HEADS = 16, 4
SHAPE = (4, 4, 2)


def build_layer(residual):
    torch.manual_seed(0)
    layer = MaskDecoderLayer(
        cross_attn_cfg=dict(type='DeformableAttention3D', embed_dims=E, num_heads=HEADS,
                            num_levels=1, num_points=2, dropout=0.1),
        self_attn_cfg=dict(embed_dims=E, num_heads=HEADS, attn_drop=0.1,
                           dropout_layer=dict(type='Dropout', drop_prob=0.1)),
        ffn_cfg=dict(embed_dims=E, feedforward_channels=2 * E, ffn_drop=0.1),
        self_attn_residual=residual)
    # non-trivial norms, so that LN(a) and a differ in scale and offset
    for norm in layer.norms:
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    return layer.eval()


def layer_inputs(B=2, Q=5):
    g = torch.Generator().manual_seed(1)
    num_value = math.prod(SHAPE)
    return dict(query=torch.randn(B, Q, E, generator=g) * 2 + 1,
                query_pos=torch.randn(B, Q, E, generator=g),
                value=torch.randn(B, num_value, E, generator=g),
                ref_pts=torch.rand(B, Q, 3, generator=g),
                spatial_shapes=torch.tensor([SHAPE]),
                level_start_index=torch.zeros(1, dtype=torch.long))


def self_attention(n, pos, mha):
    """nn.MultiheadAttention written out: q = k = n + pos, v = n; (B, Q, E) -> (B, Q, E)."""
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    B, Q, _ = n.shape
    d = E // HEADS

    def heads(x):
        return x.view(B, Q, HEADS, d).transpose(1, 2)  # (B, H, Q, d)

    q, k, v = heads((n + pos) @ w_q.T + b_q), heads((n + pos) @ w_k.T + b_k), heads(
        n @ w_v.T + b_v)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    return attn.transpose(1, 2).reshape(B, Q, E) @ mha.out_proj.weight.T + mha.out_proj.bias


def expected_output(layer, x, residual):
    """The layer's formula: a = CA(q) (residual inside), n = LN0(a), s = r + SA(n) with
    r = a (original) or n (post-norm), m = LN1(s), out = LN2(m + FFN(m))."""
    def ln(t, norm):
        return F.layer_norm(t, (E,), norm.weight, norm.bias, norm.eps)

    a = layer.cross_attn(x['query'], x['value'], query_pos=x['query_pos'],
                         reference_points=x['ref_pts'], spatial_shapes=x['spatial_shapes'],
                         level_start_index=x['level_start_index'])
    n = ln(a, layer.norms[0])
    r = a if residual == 'cross_attn_out' else n
    m = ln(r + self_attention(n, x['query_pos'], layer.self_attn.attn), layer.norms[1])
    fc1, fc2 = layer.ffn.layers[0][0], layer.ffn.layers[1]
    f = m + F.relu(m @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
    return ln(f, layer.norms[2]), a, n


def run(layer, x):
    return layer(x['query'], x['query_pos'], x['value'], x['ref_pts'], x['spatial_shapes'],
                 x['level_start_index'])


@pytest.mark.parametrize('residual', MaskDecoderLayer.SELF_ATTN_RESIDUALS)
def test_layer_computes_its_formula(residual):
    layer, x = build_layer(residual), layer_inputs()
    with torch.no_grad():
        out = run(layer, x)
        want, a, n = expected_output(layer, x, residual)
    # the two residual candidates really differ (else the test could not tell them apart)
    assert (a - n).abs().max() > 0.5
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_variants_differ_with_the_same_weights():
    original, post_norm = build_layer('cross_attn_out'), build_layer('normed_query')
    post_norm.load_state_dict(original.state_dict())
    x = layer_inputs()
    with torch.no_grad():
        diff = (run(original, x) - run(post_norm, x)).abs().max()
    assert diff > 1e-2


def test_decoder_passes_the_switch_and_defaults_to_the_original():
    assert all(layer.self_attn_residual == 'cross_attn_out'
               for layer in MaskDecoder(num_layers=2, embed_dims=E, num_heads=HEADS).layers)
    dec = MaskDecoder(num_layers=2, embed_dims=E, num_heads=HEADS,
                      self_attn_residual='normed_query')
    assert [layer.self_attn_residual for layer in dec.layers] == ['normed_query'] * 2
    with pytest.raises(ValueError, match='self_attn_residual'):
        MaskDecoder(num_layers=1, embed_dims=E, num_heads=HEADS, self_attn_residual='identity')


def test_converted_weights_reproduce_the_original_decoder():
    """The original's MaskOccDecoder (2 layers + reg_branches, run by the original's code in
    its own environment): converted weights give its outputs with the original residual and
    axis order, and measurably other outputs with the post-norm residual."""
    ref = torch.load(osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                              'data/original_mask_decoder_tiny.pth'), weights_only=True)
    converted = convert_state_dict(ref['state_dict']).state_dict
    prefix = 'pts_bbox_head.decoder.'
    weights = {k[len(prefix):]: v for k, v in converted.items()}
    embed_dims = ref['query'].shape[-1]

    def run_decoder(residual):
        dec = MaskDecoder(num_layers=len(ref['outputs']), embed_dims=embed_dims, num_heads=4,
                          legacy_axis_order=True, self_attn_residual=residual).eval()
        dec.load_state_dict(weights, strict=True)
        with torch.no_grad():
            return dec(ref['query'].transpose(0, 1), ref['query_pos'].transpose(0, 1),
                       ref['reference_points'][:, :, 0], ref['value'].transpose(0, 1),
                       torch.tensor([ref['spatial_shape']]), torch.zeros(1, dtype=torch.long))

    outs, refs = run_decoder('cross_attn_out')
    for out, want, pts, want_pts in zip(outs, ref['outputs'], refs, ref['ref_points']):
        torch.testing.assert_close(out, want.transpose(0, 1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(pts, want_pts[:, :, 0], rtol=1e-4, atol=1e-5)
    outs, _ = run_decoder('normed_query')
    assert (outs[-1] - ref['outputs'][-1].transpose(0, 1)).abs().max() > 0.05
