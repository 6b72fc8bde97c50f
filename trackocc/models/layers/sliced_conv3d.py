"""3D (transposed) convolutions that train faster on CPU by running as 2D convolutions.

PyTorch's CPU backward of ``conv3d`` is 5-10x slower than that of the equivalent 2D
convolutions on the volume sizes of TrackOcc (200 x 200 x 16, few channels). A 3D convolution
is a sum over the kernel's Z taps of 2D convolutions of Z-shifted (X, Y) slices, so on CPU,
when gradients are needed, these modules compute it that way. The parameters, state dict and
results are those of ``nn.Conv3d`` / ``nn.ConvTranspose3d``; on CUDA and without gradients
(inference) the native kernels run.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _to_slices(x: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B*Z, C, X, Y)."""
    B, C, X, Y, Z = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(B * Z, C, X, Y)


def _from_slices(y: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*Z, C, X, Y) -> contiguous (B, C, X, Y, Z)."""
    BZ, C, X, Y = y.shape
    return y.view(batch, BZ // batch, C, X, Y).permute(0, 2, 3, 4, 1).contiguous()


def sliced_conv3d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding) -> torch.Tensor:
    """``F.conv3d`` (groups 1, dilation 1, zero padding) as a sum of per-Z-tap ``conv2d``.

    Args:
        x: (B, C_in, X, Y, Z); weight: (C_out, C_in, kx, ky, kz); bias: (C_out,) or None;
        stride, padding: 3-tuples of ints.
    Returns:
        (B, C_out, X', Y', Z') equal to ``F.conv3d(x, weight, bias, stride, padding)``.
    """
    B, C, X, Y, Z = x.shape
    kz = weight.shape[-1]
    sz, pz = stride[2], padding[2]
    xz = x.permute(0, 4, 1, 2, 3).contiguous()  # (B, Z, C, X, Y): Z slices are views
    if pz:
        xz = F.pad(xz, (0, 0, 0, 0, 0, 0, pz, pz))
    z_out = (Z + 2 * pz - kz) // sz + 1
    out = None
    for k in range(kz):
        xs = xz[:, k:k + sz * (z_out - 1) + 1:sz].reshape(B * z_out, C, X, Y)
        y = F.conv2d(xs, weight[..., k], None, stride[:2], padding[:2])
        out = y if out is None else out + y
    out = _from_slices(out, B)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return out


class SlicedConv3d(nn.Conv3d):
    """``nn.Conv3d`` that trains on CPU through :func:`sliced_conv3d` (same parameters)."""

    def _sliceable(self) -> bool:
        return (self.groups == 1 and self.dilation == (1, 1, 1)
                and self.padding_mode == 'zeros' and not isinstance(self.padding, str))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda or not torch.is_grad_enabled() or not self._sliceable():
            return super().forward(x)
        return sliced_conv3d(x, self.weight, self.bias, self.stride, self.padding)


class SlicedConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with a kernel of depth 1 along Z (no Z stride/padding) that
    trains on CPU as per-slice ``conv_transpose2d`` (same parameters)."""

    def _sliceable(self) -> bool:
        return (self.kernel_size[2] == 1 and self.stride[2] == 1 and self.padding[2] == 0
                and self.output_padding[2] == 0 and self.groups == 1
                and self.dilation == (1, 1, 1) and self.padding_mode == 'zeros')

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if (x.is_cuda or output_size is not None or not torch.is_grad_enabled()
                or not self._sliceable()):
            return super().forward(x, output_size)
        y = F.conv_transpose2d(_to_slices(x), self.weight[..., 0], self.bias, self.stride[:2],
                               self.padding[:2], self.output_padding[:2])
        return _from_slices(y, x.shape[0])
