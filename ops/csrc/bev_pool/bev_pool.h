// BEVPoolv2 (Lift-Splat voxel pooling): declarations shared by the CPU and CUDA sources.
//
// Layouts: depth (B, N, D, h, w), feat (B, N, h, w, C), out (B, C, Z, Y, X), all contiguous
// and of one floating dtype; ranks are int32. A point i adds depth[ranks_depth[i]] *
// feat[ranks_feat[i], :] to voxel ranks_bev[i] = (b * Z + z) * Y * X + y * X + x of out; the
// intervals partition the points sorted by ranks_bev, one interval per output voxel.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace trackocc {

at::Tensor bev_pool_v2_forward(const at::Tensor& depth, const at::Tensor& feat,
                               const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                               const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths,
                               const std::vector<int64_t>& out_shape);  // (B, Z, Y, X, C)

// grad_out (B, C, Z, Y, X); feat_order (P,) int32 sorts the points by ranks_feat (needed by the
// CPU implementation; the CUDA one walks the intervals, accumulates the feature gradient with
// atomics and takes None). Returns {grad_depth, grad_feat} in the input dtype.
std::vector<at::Tensor> bev_pool_v2_backward(const at::Tensor& grad_out, const at::Tensor& depth,
                                             const at::Tensor& feat,
                                             const at::Tensor& ranks_depth,
                                             const at::Tensor& ranks_feat,
                                             const at::Tensor& ranks_bev,
                                             const at::Tensor& interval_starts,
                                             const at::Tensor& interval_lengths,
                                             const c10::optional<at::Tensor>& feat_order);

#ifdef WITH_CUDA
void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths,
                              at::Tensor& out);  // sets every element of out, zeros included

// grad_depth_acc / grad_feat_acc are zero-initialised accumulation-type buffers (float for
// half / bf16).
void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths, at::Tensor& grad_depth_acc,
                               at::Tensor& grad_feat_acc);
#endif

}  // namespace trackocc
