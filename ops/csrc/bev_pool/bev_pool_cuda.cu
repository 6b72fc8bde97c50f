// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// forward:     one thread per (interval, channel); sums its interval's points.
// depth grad:  one warp per point; dot product of grad_out and feat over channels.
// feat grad:   one thread per (feature pixel, channel); points grouped by ranks_feat.
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
__global__ void bev_pool_fwd_kernel(int64_t n, int c, const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ ranks_bev,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths, scalar_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int64_t i = idx / c;
  const int k = static_cast<int>(idx - i * c);
  const int s = starts[i], e = s + lengths[i];
  acc_t sum = 0;
  for (int p = s; p < e; ++p)
    sum += static_cast<acc_t>(depth[ranks_depth[p]]) *
           static_cast<acc_t>(feat[static_cast<int64_t>(ranks_feat[p]) * c + k]);
  out[static_cast<int64_t>(ranks_bev[s]) * c + k] = static_cast<scalar_t>(sum);
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_depth_grad_kernel(int64_t n_points, int c,
                                           const scalar_t* __restrict__ grad_out,
                                           const scalar_t* __restrict__ feat,
                                           const int* __restrict__ ranks_depth,
                                           const int* __restrict__ ranks_feat,
                                           const int* __restrict__ ranks_bev,
                                           acc_t* __restrict__ grad_depth) {
  const int64_t p = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (p >= n_points) return;  // uniform within a warp
  const scalar_t* g = grad_out + static_cast<int64_t>(ranks_bev[p]) * c;
  const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c;
  acc_t dot = 0;
  for (int k = lane; k < c; k += 32) dot += static_cast<acc_t>(g[k]) * static_cast<acc_t>(f[k]);
  for (int off = 16; off > 0; off >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, off);
  if (lane == 0) atomicAdd(grad_depth + ranks_depth[p], dot);
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_feat_grad_kernel(int64_t n, int c, const scalar_t* __restrict__ grad_out,
                                          const scalar_t* __restrict__ depth,
                                          const int* __restrict__ ranks_depth,
                                          const int* __restrict__ ranks_feat,
                                          const int* __restrict__ ranks_bev,
                                          const int* __restrict__ order,
                                          const int* __restrict__ starts,
                                          const int* __restrict__ lengths,
                                          scalar_t* __restrict__ grad_feat) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int64_t i = idx / c;
  const int k = static_cast<int>(idx - i * c);
  const int s = starts[i], e = s + lengths[i];
  acc_t sum = 0;
  for (int j = s; j < e; ++j) {
    const int p = order[j];
    sum += static_cast<acc_t>(depth[ranks_depth[p]]) *
           static_cast<acc_t>(grad_out[static_cast<int64_t>(ranks_bev[p]) * c + k]);
  }
  grad_feat[static_cast<int64_t>(ranks_feat[order[s]]) * c + k] = static_cast<scalar_t>(sum);
}

}  // namespace

void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths, at::Tensor& out) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int64_t n = interval_starts.numel() * c;
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_fwd_kernel<scalar_t, acc_t><<<num_blocks(n), kThreads, 0, stream>>>(
        n, c, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& feat_order, const at::Tensor& feat_starts,
                               const at::Tensor& feat_lengths, at::Tensor& grad_depth_acc,
                               at::Tensor& grad_feat) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int64_t n_points = ranks_depth.numel();
  const int64_t n_feat = feat_starts.numel() * c;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    if (n_points > 0) {
      bev_pool_depth_grad_kernel<scalar_t, acc_t><<<num_blocks(n_points * 32), kThreads, 0,
                                                    stream>>>(
          n_points, c, grad_out.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
          ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
          grad_depth_acc.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (n_feat > 0) {
      bev_pool_feat_grad_kernel<scalar_t, acc_t><<<num_blocks(n_feat), kThreads, 0, stream>>>(
          n_feat, c, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
          ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
          feat_order.data_ptr<int>(), feat_starts.data_ptr<int>(), feat_lengths.data_ptr<int>(),
          grad_feat.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace trackocc
