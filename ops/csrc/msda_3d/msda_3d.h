// 3D multi-scale deformable attention: declarations shared by the CPU and CUDA sources.
//
// value (B, S, M, Dh), spatial_shapes (L, 3) int64 (X, Y, Z), level_start_index (L,) int64,
// sampling_locations (B, Q, M, L, P, 3) normalized (x, y, z), attention_weights
// (B, Q, M, L, P); output (B, Q, M*Dh) in value's dtype. Locations and weights are given in the
// accumulation type of value's dtype (float32 for fp16/bf16/fp32, float64 for fp64) so that
// half-precision values keep sub-voxel sampling precision.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace trackocc {

at::Tensor ms_deform_attn_3d_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights);

// Returns {grad_value (value dtype), grad_sampling_locations, grad_attention_weights (their dtype)}.
std::vector<at::Tensor> ms_deform_attn_3d_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output);

#ifdef WITH_CUDA
void ms_deform_attn_3d_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index,
                                    const at::Tensor& sampling_locations,
                                    const at::Tensor& attention_weights, at::Tensor& output);

// The three gradients are accumulation-type buffers (float for half/bf16), all written (or
// zeroed and added into) by the function.
void ms_deform_attn_3d_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights,
                                     const at::Tensor& grad_output, at::Tensor& grad_value,
                                     at::Tensor& grad_loc, at::Tensor& grad_attn);
#endif

}  // namespace trackocc
