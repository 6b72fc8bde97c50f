// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, and a voxel rank is b * V + v.
// forward:     one thread per (channel, interval), intervals fastest so that neighbouring
//              threads write neighbouring voxels.
// depth grad:  one thread per point, looping over channels (points are sorted by voxel).
// feat grad:   one thread per (run of a feature pixel in the feature-sorted order, channel);
//              the runs are found on the device (no host synchronisation).
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "bev_pool.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_fwd_kernel(int n_intervals, int c, int V,
                                    const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ ranks_bev,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths, scalar_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(n_intervals) * c) return;
  const int k = static_cast<int>(idx / n_intervals);
  const int i = static_cast<int>(idx - static_cast<int64_t>(k) * n_intervals);
  const int s = starts[i], e = s + lengths[i];
  acc_t sum = 0;
  for (int p = s; p < e; ++p)
    sum += static_cast<acc_t>(depth[ranks_depth[p]]) *
           static_cast<acc_t>(feat[static_cast<int64_t>(ranks_feat[p]) * c + k]);
  const int r = ranks_bev[s], b = r / V;
  out[(static_cast<int64_t>(b) * c + k) * V + (r - b * V)] = static_cast<scalar_t>(sum);
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_depth_grad_kernel(int n_points, int c, int V,
                                           const scalar_t* __restrict__ grad_out,
                                           const scalar_t* __restrict__ feat,
                                           const int* __restrict__ ranks_depth,
                                           const int* __restrict__ ranks_feat,
                                           const int* __restrict__ ranks_bev,
                                           acc_t* __restrict__ grad_depth) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n_points) return;
  const int r = ranks_bev[p], b = r / V;
  const scalar_t* g = grad_out + static_cast<int64_t>(b) * c * V + (r - b * V);
  const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c;
  acc_t dot = 0;
  for (int k = 0; k < c; ++k)
    dot += static_cast<acc_t>(g[static_cast<int64_t>(k) * V]) * static_cast<acc_t>(f[k]);
  atomicAdd(grad_depth + ranks_depth[p], dot);
}

// one thread per (run of one feature pixel in the feature-sorted order, channel), channels
// fastest: the lanes of a warp share the run, so the index loads are broadcasts
template <typename scalar_t, typename acc_t>
__global__ void bev_pool_feat_grad_kernel(int n_points, int c, int V,
                                          const scalar_t* __restrict__ grad_out,
                                          const scalar_t* __restrict__ depth,
                                          const int* __restrict__ ranks_depth,
                                          const int* __restrict__ ranks_feat,
                                          const int* __restrict__ ranks_bev,
                                          const int* __restrict__ order,
                                          const int* __restrict__ run_start,
                                          const int* __restrict__ n_runs,
                                          scalar_t* __restrict__ grad_feat) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r = idx / c;
  if (r >= *n_runs) return;
  const int k = static_cast<int>(idx - r * c);
  const int j0 = run_start[r];
  const int f = ranks_feat[order[j0]];
  acc_t sum = 0;
  for (int j = j0; j < n_points; ++j) {
    const int p = order[j];
    if (ranks_feat[p] != f) break;
    const int rb = ranks_bev[p], b = rb / V;
    sum += static_cast<acc_t>(depth[ranks_depth[p]]) *
           static_cast<acc_t>(grad_out[(static_cast<int64_t>(b) * c + k) * V + (rb - b * V)]);
  }
  grad_feat[static_cast<int64_t>(f) * c + k] = static_cast<scalar_t>(sum);
}

}  // namespace

void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths, at::Tensor& out) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(out.size(2) * out.size(3) * out.size(4));
  const int64_t n = static_cast<int64_t>(n_intervals) * c;
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_fwd_kernel<scalar_t, acc_t><<<num_blocks(n), kThreads, 0, stream>>>(
        n_intervals, c, V, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& feat_order, at::Tensor& grad_depth_acc,
                               at::Tensor& grad_feat) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_points = static_cast<int>(ranks_depth.numel());
  const int V = static_cast<int>(grad_out.size(2) * grad_out.size(3) * grad_out.size(4));
  if (n_points == 0) return;
  // runs of equal ranks_feat in the sorted order, computed on the device: run r starts at
  // run_start[r] for r < n_runs (no nonzero(), so no host synchronisation)
  const at::Tensor sorted_feat = ranks_feat.index_select(0, feat_order);
  at::Tensor new_run = at::ones({n_points}, ranks_feat.options().dtype(at::kBool));
  if (n_points > 1)
    new_run.slice(0, 1).copy_(sorted_feat.slice(0, 1).ne(sorted_feat.slice(0, 0, n_points - 1)));
  const at::Tensor run_id = new_run.cumsum(0, at::kInt).sub_(1);
  at::Tensor run_start = at::full({n_points}, n_points, ranks_feat.options());
  run_start.scatter_reduce_(0, run_id.to(at::kLong),
                            at::arange(n_points, ranks_feat.options()), "amin");
  const at::Tensor n_runs = run_id.slice(0, n_points - 1).add(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_depth_grad_kernel<scalar_t, acc_t><<<num_blocks(n_points), kThreads, 0, stream>>>(
        n_points, c, V, grad_out.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
        grad_depth_acc.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bev_pool_feat_grad_kernel<scalar_t, acc_t>
        <<<num_blocks(static_cast<int64_t>(n_points) * c), kThreads, 0, stream>>>(
            n_points, c, V, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
            ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
            feat_order.data_ptr<int>(), run_start.data_ptr<int>(), n_runs.data_ptr<int>(),
            grad_feat.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc
