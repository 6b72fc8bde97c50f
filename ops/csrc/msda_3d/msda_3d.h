// 3D multi-scale deformable attention: declarations shared by the CPU and CUDA sources.
//
// value (B, S, M, Dh), spatial_shapes (L, 3) int64 (X, Y, Z), level_start_index (L,) int64,
// sampling_locations (B, Q, M, L, P, 3) normalized (x, y, z), attention_weights
// (B, Q, M, L, P); value, locations and weights share one floating dtype; output (B, Q, M*Dh).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace trackocc {

at::Tensor ms_deform_attn_3d_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights} in the input dtype.
std::vector<at::Tensor> ms_deform_attn_3d_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output);

#ifdef WITH_CUDA
void ms_deform_attn_3d_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index,
                                    const at::Tensor& sampling_locations,
                                    const at::Tensor& attention_weights, at::Tensor& output);

// The three gradients are accumulation-type buffers (float for half/bf16), zero-initialised.
void ms_deform_attn_3d_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights,
                                     const at::Tensor& grad_output, at::Tensor& grad_value,
                                     at::Tensor& grad_loc, at::Tensor& grad_attn);
#endif

}  // namespace trackocc
