// 3D multi-scale deformable attention CUDA kernels (fp32 / fp16 / bf16 / fp64).
//
// One thread per output element (b, q, m, c); the Dh threads of one (b, q, m) are adjacent,
// so value reads and grad_value atomics are coalesced over channels. The backward reduces the
// per-channel contributions to grad_loc / grad_attn with warp shuffles over groups of `group`
// lanes (largest power of two dividing Dh, at most 32) before one atomic per group. Gradients
// accumulate in the accumulation type (float for half / bf16).
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "msda_3d.h"
#include "msda_3d_common.h"

#include <limits>

namespace trackocc {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void msda3d_fwd_kernel(index_t n, index_t S, index_t M, index_t Dh, index_t Q,
                                  index_t L, index_t P, const scalar_t* __restrict__ value,
                                  const int64_t* __restrict__ shapes,
                                  const int64_t* __restrict__ starts,
                                  const acc_t* __restrict__ loc,
                                  const acc_t* __restrict__ attn,
                                  scalar_t* __restrict__ out) {
  const index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const index_t bqm = idx / Dh;
  const index_t c = idx - bqm * Dh;
  const index_t m = bqm % M;
  const index_t b = bqm / (M * Q);
  const index_t stride = M * Dh;
  acc_t sum = 0;
  TrilinearCorners<acc_t, index_t> t;
  for (index_t l = 0; l < L; ++l) {
    const index_t X = static_cast<index_t>(shapes[3 * l]), Y = static_cast<index_t>(shapes[3 * l + 1]),
                  Z = static_cast<index_t>(shapes[3 * l + 2]);
    const scalar_t* v = value + ((b * S + static_cast<index_t>(starts[l])) * M + m) * Dh + c;
    for (index_t p = 0; p < P; ++p) {
      const index_t s = (bqm * L + l) * P + p;
      trilinear_corners<acc_t, index_t>(loc[3 * s] * X - acc_t(0.5),
                                        loc[3 * s + 1] * Y - acc_t(0.5),
                                        loc[3 * s + 2] * Z - acc_t(0.5), X, Y, Z, t);
      if (!t.any) continue;
      sum += attn[s] * trilinear_value<scalar_t, acc_t, index_t>(v, stride, t);
    }
  }
  out[idx] = static_cast<scalar_t>(sum);
}

template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, int group) {
  for (int off = group >> 1; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void msda3d_bwd_kernel(index_t n, index_t S, index_t M, index_t Dh, index_t Q,
                                  index_t L, index_t P, int group,
                                  const scalar_t* __restrict__ value,
                                  const int64_t* __restrict__ shapes,
                                  const int64_t* __restrict__ starts,
                                  const acc_t* __restrict__ loc,
                                  const acc_t* __restrict__ attn,
                                  const scalar_t* __restrict__ grad_out,
                                  acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_loc,
                                  acc_t* __restrict__ grad_attn) {
  // every lane of a warp runs the whole loop (shuffles need them); tail lanes contribute 0
  const index_t raw = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = raw < n;
  const index_t idx = active ? raw : n - 1;
  const index_t bqm = idx / Dh;
  const index_t c = idx - bqm * Dh;
  const index_t m = bqm % M;
  const index_t b = bqm / (M * Q);
  const index_t stride = M * Dh;
  const acc_t g = active ? static_cast<acc_t>(grad_out[idx]) : acc_t(0);
  const bool leader = active && (c % group) == 0;
  TrilinearCorners<acc_t, index_t> t;
  for (index_t l = 0; l < L; ++l) {
    const index_t X = static_cast<index_t>(shapes[3 * l]), Y = static_cast<index_t>(shapes[3 * l + 1]),
                  Z = static_cast<index_t>(shapes[3 * l + 2]);
    const index_t v_off = ((b * S + static_cast<index_t>(starts[l])) * M + m) * Dh + c;
    for (index_t p = 0; p < P; ++p) {
      const index_t s = (bqm * L + l) * P + p;
      trilinear_corners<acc_t, index_t>(loc[3 * s] * X - acc_t(0.5),
                                        loc[3 * s + 1] * Y - acc_t(0.5),
                                        loc[3 * s + 2] * Z - acc_t(0.5), X, Y, Z, t);
      const acc_t w = attn[s];
      acc_t dxyz[3];
      const acc_t val =
          trilinear_value_grad<scalar_t, acc_t, index_t>(value + v_off, stride, t, dxyz);
      const acc_t gw = g * w;
      if (active && t.any && gw != acc_t(0)) {
        TRACKOCC_UNROLL
        for (int k = 0; k < 8; ++k)
          if (t.valid[k]) atomicAdd(grad_value + v_off + t.key[k] * stride, gw * t.w[k]);
      }
      const acc_t ga = group_sum(g * val, group);
      const acc_t gx = group_sum(gw * dxyz[0], group);
      const acc_t gy = group_sum(gw * dxyz[1], group);
      const acc_t gz = group_sum(gw * dxyz[2], group);
      if (leader && t.any) {
        atomicAdd(grad_attn + s, ga);
        atomicAdd(grad_loc + 3 * s, gx * static_cast<acc_t>(X));
        atomicAdd(grad_loc + 3 * s + 1, gy * static_cast<acc_t>(Y));
        atomicAdd(grad_loc + 3 * s + 2, gz * static_cast<acc_t>(Z));
      }
    }
  }
}

// int32 index arithmetic when every flat index fits, int64 otherwise
inline bool fits_int32(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s >= static_cast<int64_t>(std::numeric_limits<int>::max())) return false;
  return true;
}

}  // namespace

void ms_deform_attn_3d_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index,
                                    const at::Tensor& sampling_locations,
                                    const at::Tensor& attention_weights, at::Tensor& output) {
  const at::cuda::OptionalCUDAGuard guard(value.device());
  const int64_t S = value.size(1);
  const int M = value.size(2), Dh = value.size(3);
  const int Q = sampling_locations.size(1), L = sampling_locations.size(3),
            P = sampling_locations.size(4);
  const int64_t n = output.numel();
  const bool small = fits_int32({n + kThreads, value.numel(), sampling_locations.numel()});
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_3d_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    auto launch = [&](auto index_zero) {
      using index_t = decltype(index_zero);
      msda3d_fwd_kernel<scalar_t, acc_t, index_t><<<num_blocks(n), kThreads, 0, stream>>>(
          static_cast<index_t>(n), static_cast<index_t>(S), M, Dh, Q, L, P,
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
          attention_weights.data_ptr<acc_t>(), output.data_ptr<scalar_t>());
    };
    if (small) launch(int(0)); else launch(int64_t(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void ms_deform_attn_3d_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights,
                                     const at::Tensor& grad_output, at::Tensor& grad_value,
                                     at::Tensor& grad_loc, at::Tensor& grad_attn) {
  const at::cuda::OptionalCUDAGuard guard(value.device());
  const int64_t S = value.size(1);
  const int M = value.size(2), Dh = value.size(3);
  const int Q = sampling_locations.size(1), L = sampling_locations.size(3),
            P = sampling_locations.size(4);
  const int64_t n = grad_output.numel();
  const bool small = fits_int32({n + kThreads, value.numel(), sampling_locations.numel()});
  int group = 1;  // largest power of two dividing Dh, at most a warp
  while (group < 32 && Dh % (group * 2) == 0) group *= 2;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_3d_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    auto launch = [&](auto index_zero) {
      using index_t = decltype(index_zero);
      msda3d_bwd_kernel<scalar_t, acc_t, index_t><<<num_blocks(n), kThreads, 0, stream>>>(
          static_cast<index_t>(n), static_cast<index_t>(S), M, Dh, Q, L, P, group,
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
          attention_weights.data_ptr<acc_t>(), grad_output.data_ptr<scalar_t>(),
          grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>());
    };
    if (small) launch(int(0)); else launch(int64_t(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc
