// Panoptic merge statistics: argument checks, device dispatch and the CPU implementation.
#include "panoptic_merge.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <mutex>

namespace trackocc {
namespace {

constexpr int64_t kVoxelChunk = 4096;  // voxels per CPU task (their best values stay in cache)

template <typename scalar_t>
void stats_cpu(const std::vector<at::Tensor>& blocks, int64_t num_preds, int64_t num_voxels,
               bool skip_dropped, const at::opmath_type<scalar_t>* scores, const bool* keep,
               int64_t* winner, bool* in_own, int64_t* own_area, int64_t* won_area,
               int64_t* kept_area) {
  using acc_t = at::opmath_type<scalar_t>;
  std::mutex merge_counts;
  at::parallel_for(0, num_voxels, kVoxelChunk, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    // skip_dropped: dropped rows are empty masks (score * prob = -1), not read
    std::vector<acc_t> best(n, skip_dropped ? acc_t(-1)
                                            : -std::numeric_limits<acc_t>::infinity());
    std::vector<int64_t> best_p(n, 0);
    std::vector<char> best_own(n, 0);
    std::vector<int64_t> own(num_preds, 0), won(num_preds, 0), kept(num_preds, 0);
    int64_t p = 0;
    for (const auto& block : blocks) {
      const scalar_t* rows = block.data_ptr<scalar_t>();
      for (int64_t r = 0; r < block.size(0); ++r, ++p) {
        const scalar_t* row = rows + r * num_voxels + begin;
        const acc_t score = scores[p];
        const bool kept_row = keep[p];
        if (skip_dropped && !kept_row) continue;
        int64_t own_count = 0;
        for (int64_t i = 0; i < n; ++i) {
          const acc_t prob = acc_t(1) / (acc_t(1) + std::exp(-static_cast<acc_t>(row[i])));
          const bool is_own = prob >= acc_t(0.5);
          own_count += is_own;
          const acc_t w = kept_row ? prob * score : acc_t(-1);
          if (w > best[i]) {
            best[i] = w;
            best_p[i] = p;
            best_own[i] = is_own;
          }
        }
        own[p] = own_count;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      winner[begin + i] = best_p[i];
      in_own[begin + i] = best_own[i];
      ++won[best_p[i]];
      kept[best_p[i]] += best_own[i];
    }
    std::lock_guard<std::mutex> lock(merge_counts);
    for (int64_t q = 0; q < num_preds; ++q) {
      own_area[q] += own[q];
      won_area[q] += won[q];
      kept_area[q] += kept[q];
    }
  });
}

}  // namespace

std::vector<at::Tensor> panoptic_merge_stats(const std::vector<at::Tensor>& mask_blocks,
                                             const at::Tensor& scores, const at::Tensor& keep,
                                             bool skip_dropped) {
  TORCH_CHECK(!mask_blocks.empty(), "panoptic_merge_stats: no mask blocks");
  const at::Tensor& first = mask_blocks[0];
  TORCH_CHECK(first.dim() == 2, "panoptic_merge_stats: mask blocks must be (P_b, N), got ",
              first.sizes());
  const int64_t num_voxels = first.size(1);
  int64_t num_preds = 0;
  for (const auto& b : mask_blocks) {
    TORCH_CHECK(b.dim() == 2 && b.size(1) == num_voxels && b.is_contiguous(),
                "panoptic_merge_stats: every mask block must be a contiguous (P_b, ", num_voxels,
                ") tensor, got ", b.sizes());
    TORCH_CHECK(b.scalar_type() == first.scalar_type() && b.device() == first.device(),
                "panoptic_merge_stats: mask blocks differ in dtype or device");
    num_preds += b.size(0);
  }
  const auto acc_type = first.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(at::isFloatingType(first.scalar_type()),
              "panoptic_merge_stats: mask logits must be floating, got ", first.scalar_type());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == num_preds &&
                  scores.scalar_type() == acc_type && scores.is_contiguous(),
              "panoptic_merge_stats: scores must be a contiguous (", num_preds, ",) ",
              acc_type, " tensor, got ", scores.sizes(), " ", scores.scalar_type());
  TORCH_CHECK(keep.dim() == 1 && keep.size(0) == num_preds &&
                  keep.scalar_type() == at::kBool && keep.is_contiguous(),
              "panoptic_merge_stats: keep must be a contiguous (", num_preds, ",) bool tensor");
  TORCH_CHECK(scores.device() == first.device() && keep.device() == first.device(),
              "panoptic_merge_stats: scores, keep and masks on different devices");

  const auto long_opts = first.options().dtype(at::kLong);
  at::Tensor winner = at::empty({num_voxels}, long_opts);
  at::Tensor in_own = at::empty({num_voxels}, first.options().dtype(at::kBool));
  at::Tensor own_area = at::zeros({num_preds}, long_opts);
  at::Tensor won_area = at::zeros({num_preds}, long_opts);
  at::Tensor kept_area = at::zeros({num_preds}, long_opts);
  if (num_voxels == 0 || num_preds == 0) {
    winner.zero_();
    return {winner, in_own, own_area, won_area, kept_area};
  }
  if (first.is_cuda()) {
#ifdef WITH_CUDA
    panoptic_merge_stats_cuda(mask_blocks, scores, keep, skip_dropped, winner, in_own, own_area,
                              won_area, kept_area);
#else
    TORCH_CHECK(false, "panoptic_merge_stats: trackocc._ext was built without CUDA");
#endif
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, first.scalar_type(), "panoptic_merge_stats_cpu", [&] {
          stats_cpu<scalar_t>(mask_blocks, num_preds, num_voxels, skip_dropped,
                              scores.data_ptr<at::opmath_type<scalar_t>>(),
                              keep.data_ptr<bool>(), winner.data_ptr<int64_t>(),
                              in_own.data_ptr<bool>(), own_area.data_ptr<int64_t>(),
                              won_area.data_ptr<int64_t>(), kept_area.data_ptr<int64_t>());
        });
  }
  return {winner, in_own, own_area, won_area, kept_area};
}

}  // namespace trackocc
