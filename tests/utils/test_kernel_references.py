"""``references_as_kernels``: a custom op's PyTorch reference counted as the one kernel a GPU
runs (one op, its inputs read and its output written once, one backward node), with the
reference's own values and gradients."""
import torch

from trackocc.analysis import kernel_references
from trackocc.analysis.kernel_references import as_one_kernel, references_as_kernels
from trackocc.analysis.memory_traffic import record_traffic, tensor_bytes
from trackocc.analysis.train_ops import OpCount, backward_nodes
from trackocc.ops import msda_3d
from trackocc.ops.msda_3d import multi_scale_deformable_attn_3d_pytorch


def _inputs():
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 3, 2], [2, 2, 1]])
    starts = torch.tensor([0, 24])
    value = torch.randn(2, 28, 2, 3, generator=gen, dtype=torch.float64)
    loc = torch.rand(2, 5, 2, 2, 2, 3, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    attn = torch.rand(2, 5, 2, 2, 2, generator=gen, dtype=torch.float64)
    return value, shapes, starts, loc, attn


def test_one_kernel_equals_the_reference_forward_and_backward():
    kernel = as_one_kernel('msda_3d', multi_scale_deformable_attn_3d_pytorch)
    results = []
    for fn in (multi_scale_deformable_attn_3d_pytorch, kernel):
        value, shapes, starts, loc, attn = _inputs()
        value.requires_grad_(True)
        loc.requires_grad_(True)
        out = fn(value, shapes, starts, loc, attention_weights=attn)  # a keyword too
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        results.append((out.detach(), value.grad, loc.grad))
    for ref, got in zip(*results):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert kernel.__wrapped__ is multi_scale_deformable_attn_3d_pytorch


def test_counters_see_one_kernel_call():
    kernel = as_one_kernel('msda_3d', multi_scale_deformable_attn_3d_pytorch)
    value, shapes, starts, loc, attn = _inputs()
    value.requires_grad_(True)
    with OpCount() as reference:
        ref = multi_scale_deformable_attn_3d_pytorch(value, shapes, starts, loc, attn)
    with OpCount(lines=True) as count, record_traffic(lines=True) as rec:
        out = kernel(value, shapes, starts, loc, attn)
    assert reference.ops > 10 and count.ops == 1
    assert count.kernels == {'msda_3d': 1}
    assert count.by_file == {'?': 1}  # called from this test, outside the packages
    kernel_row = rec.by_kind['kernel']
    assert kernel_row == [1, sum(tensor_bytes(t) for t in (value, shapes, starts, loc, attn)),
                          tensor_bytes(out)]
    assert sum(row[0] for row in rec.by_kind.values()) == 1  # nothing else recorded
    nodes = backward_nodes(out.sum())
    assert nodes['_OneKernelBackward'] == 1
    assert sum(backward_nodes(ref.sum()).values()) > sum(nodes.values())


def test_references_are_swapped_in_the_block_and_restored():
    before = [getattr(__import__(m, fromlist=[a]), a)
              for m, a, _ in kernel_references.KERNEL_REFERENCES]
    with references_as_kernels():
        assert msda_3d.multi_scale_deformable_attn_3d_pytorch.__wrapped__ is \
            multi_scale_deformable_attn_3d_pytorch
        value, shapes, starts, loc, attn = _inputs()
        with OpCount() as count:  # called where the model calls it: the public op
            msda_3d.multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn)
        assert count.kernels == {'msda_3d': 1}
    after = [getattr(__import__(m, fromlist=[a]), a)
             for m, a, _ in kernel_references.KERNEL_REFERENCES]
    assert after == before


def test_backward_is_one_kernel_call_too():
    kernel = as_one_kernel('msda_3d', multi_scale_deformable_attn_3d_pytorch)
    value, shapes, starts, loc, attn = _inputs()
    value.requires_grad_(True)
    out = kernel(value, shapes, starts, loc, attn)
    grad_out = torch.ones_like(out)
    with OpCount() as count, record_traffic() as rec:
        out.backward(grad_out)
    assert count.kernels == {'msda_3d_backward': 1} and count.ops == 1
    # the saved inputs and the output's gradient read, the value's gradient written
    assert rec.by_kind['kernel'] == [
        1, sum(tensor_bytes(t) for t in (value, shapes, starts, loc, attn, grad_out)),
        tensor_bytes(value.grad)]
