// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, and a voxel rank is b * V + v.
// forward:     one thread per (channel, interval), intervals fastest so that neighbouring
//              threads write neighbouring voxels.
// backward:    one warp per interval, lanes over channels: the interval's output-gradient
//              column is read once from the channel-first (B, C, V) tensor (no transposed copy)
//              and serves all its points; the depth gradient of a point is a warp reduction
//              (a plain store: ranks_depth is unique), the feature gradient float atomics (like
//              index_add in the reference, its summation order is not deterministic). No sort,
//              no host synchronisation.
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

// one warp per interval, lanes over channels; the lanes keep the interval's gradient column
// in registers (kMaxChunks * 32 channels) and re-read it from L1 beyond that
constexpr int kMaxChunks = 4;

// at most 40 registers (6 blocks per SM): the kernel waits on memory latency, and more warps
// in flight hide it (48 registers without the bound: 5 blocks)
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 6)
    bev_pool_bwd_kernel(int n_intervals, int c, int V, const scalar_t* __restrict__ grad_out,
                        const scalar_t* __restrict__ depth, const scalar_t* __restrict__ feat,
                        const int* __restrict__ ranks_depth, const int* __restrict__ ranks_feat,
                        const int* __restrict__ ranks_bev, const int* __restrict__ starts,
                        const int* __restrict__ lengths, acc_t* __restrict__ grad_depth,
                        acc_t* __restrict__ grad_feat) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (i >= n_intervals) return;  // uniform within a warp
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s], b = r / V;
  // channel k of the interval's voxel: g[k * V]
  const scalar_t* g = grad_out + static_cast<int64_t>(b) * c * V + (r - b * V);
  acc_t gk[kMaxChunks];
#pragma unroll
  for (int j = 0; j < kMaxChunks; ++j) {
    const int k = lane + 32 * j;
    gk[j] = k < c ? static_cast<acc_t>(g[static_cast<int64_t>(k) * V]) : acc_t(0);
  }
  for (int p = s; p < e; ++p) {
    const int rd = ranks_depth[p];
    const int64_t f_off = static_cast<int64_t>(ranks_feat[p]) * c;
    const acc_t d = static_cast<acc_t>(depth[rd]);
    acc_t dot = 0;
#pragma unroll
    for (int j = 0; j < kMaxChunks; ++j) {
      const int k = lane + 32 * j;
      if (k < c) {
        dot += gk[j] * static_cast<acc_t>(feat[f_off + k]);
        atomicAdd(grad_feat + f_off + k, d * gk[j]);
      }
    }
    for (int k = lane + 32 * kMaxChunks; k < c; k += 32) {
      const acc_t gv = static_cast<acc_t>(g[static_cast<int64_t>(k) * V]);
      dot += gv * static_cast<acc_t>(feat[f_off + k]);
      atomicAdd(grad_feat + f_off + k, d * gv);
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, off);
    if (lane == 0) grad_depth[rd] = dot;
  }
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
                               const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths, at::Tensor& grad_depth_acc,
                               at::Tensor& grad_feat_acc) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(grad_out.size(2) * grad_out.size(3) * grad_out.size(4));
  if (n_intervals == 0 || c == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_bwd_kernel<scalar_t, acc_t>
        <<<num_blocks(static_cast<int64_t>(n_intervals) * 32), kThreads, 0, stream>>>(
            n_intervals, c, V, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
            feat.data_ptr<scalar_t>(), ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
            ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
            interval_lengths.data_ptr<int>(), grad_depth_acc.data_ptr<acc_t>(),
            grad_feat_acc.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc
