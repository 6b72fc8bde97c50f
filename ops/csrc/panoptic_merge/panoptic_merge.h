// Panoptic merge statistics (Mask2Former panoptic inference): declarations shared by the CPU and
// CUDA sources.
//
// The mask logits of P predictions over N voxels come as row blocks (P_b, N) of one floating
// dtype (thing and stuff queries without concatenating them); prediction p is row p of the
// blocks taken in order. With prob = sigmoid(logit) computed in the accumulation type (float,
// double for double logits), one pass over the logits gives
//   winner[v]    first p maximizing (keep[p] ? score[p] * prob[p, v] : -1)
//   in_own[v]    prob[winner[v], v] >= 0.5
//   own_area[p]  #{v : prob[p, v] >= 0.5}
//   won_area[p]  #{v : winner[v] == p}
//   kept_area[p] #{v : winner[v] == p and in_own[v]}
// which is everything the merge needs of the (P, N) masks. With skip_dropped the rows not kept
// are not read and count as empty masks (prob = 0): their own_area is 0 and a voxel no kept row
// claims goes to row 0 with in_own false; the merge's result is the same.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace trackocc {

// scores (P,) float32 (float64 for float64 logits), keep (P,) bool.
// Returns {winner (N,) int64, in_own (N,) bool, own_area, won_area, kept_area (P,) int64}.
std::vector<at::Tensor> panoptic_merge_stats(const std::vector<at::Tensor>& mask_blocks,
                                             const at::Tensor& scores, const at::Tensor& keep,
                                             bool skip_dropped);

#ifdef WITH_CUDA
// outputs allocated by the caller, the three areas zero-initialised
void panoptic_merge_stats_cuda(const std::vector<at::Tensor>& mask_blocks,
                               const at::Tensor& scores, const at::Tensor& keep,
                               bool skip_dropped, at::Tensor& winner, at::Tensor& in_own,
                               at::Tensor& own_area, at::Tensor& won_area,
                               at::Tensor& kept_area);
#endif

}  // namespace trackocc
