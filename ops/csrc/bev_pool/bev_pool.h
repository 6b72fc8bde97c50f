// BEVPoolv2 (Lift-Splat voxel pooling): declarations shared by the CPU and CUDA sources.
//
// Layouts: depth (B, N, D, h, w), feat (B, N, h, w, C), out (B, C, Z, Y, X), all contiguous
// and of one floating dtype; ranks are int32. A point i adds depth[ranks_depth[i]] *
// feat[ranks_feat[i], :] to voxel ranks_bev[i] = (b * Z + z) * Y * X + y * X + x of out; the
// intervals partition the points sorted by ranks_bev, one interval per output voxel; a point's
// feature pixel is that of its depth element (b, n, d, y, x) -> (b, n, y, x).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace trackocc {

// Returns {out (B, C, Z, Y, X), maps}: maps is the CUDA forward's int32 index buffer that the
// CUDA backward reads (flag, voxel -> interval, depth element -> voxel); empty on the CPU.
std::vector<at::Tensor> bev_pool_v2_forward(const at::Tensor& depth, const at::Tensor& feat,
                                            const at::Tensor& ranks_depth,
                                            const at::Tensor& ranks_feat,
                                            const at::Tensor& ranks_bev,
                                            const at::Tensor& interval_starts,
                                            const at::Tensor& interval_lengths,
                                            const std::vector<int64_t>& out_shape);  // (B, Z, Y, X, C)

// grad_out (B, C, Z, Y, X). The CPU implementation needs feat_order (P,) int32, the points
// sorted by ranks_feat; the CUDA one walks the feature pixels and needs the forward's maps.
// Returns {grad_depth, grad_feat} in the input dtype.
std::vector<at::Tensor> bev_pool_v2_backward(const at::Tensor& grad_out, const at::Tensor& depth,
                                             const at::Tensor& feat,
                                             const at::Tensor& ranks_depth,
                                             const at::Tensor& ranks_feat,
                                             const at::Tensor& ranks_bev,
                                             const at::Tensor& interval_starts,
                                             const at::Tensor& interval_lengths,
                                             const c10::optional<at::Tensor>& feat_order,
                                             const c10::optional<at::Tensor>& maps);

#ifdef WITH_CUDA
// out is written whole (uninitialised on entry); maps is an int32 buffer of
// 1 + B * Z * Y * X + depth.numel() elements filled with -1.
void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths, at::Tensor& out,
                              at::Tensor& maps);

// grad_depth / grad_feat (input dtype) are written whole (uninitialised on entry).
void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths, const at::Tensor& maps,
                               at::Tensor& grad_depth, at::Tensor& grad_feat);
#endif

}  // namespace trackocc
