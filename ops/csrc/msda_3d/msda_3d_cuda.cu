// 3D multi-scale deformable attention CUDA kernels (fp32 / fp16 / bf16 / fp64).
//
// One thread per (b, q, m, point lane, channel group of VEC channels); the Dh / VEC threads of
// one (b, q, m, point lane) are adjacent, so value reads (VEC-wide vector loads) and grad_value
// atomics are coalesced over channels, and the trilinear corner math is shared by VEC channels.
// Point lanes: a large call (the encoder, 40 000 queries) gives each thread all P points of
// its (b, q, m) (`point_lanes` 1); a call too small to fill the device (the decoder's 250
// queries: 16 000 threads) spreads the points over `point_lanes` threads, the forward adding
// their partial sums with shuffles. Thread groups run head-major (m outermost), so the
// resident threads share one head's slice of value and grad_value, which L2 holds (at the
// encoder's size: L2 hit rate 57 -> 93 %, backward 0.71 -> 0.42 ms on an H200, uniform
// sampling). The backward reduces the per-thread contributions to grad_loc / grad_attn with
// warp shuffles over groups of `group` lanes (largest power of two dividing Dh / VEC, at
// most 32). When one group spans a whole (b, q, m) (or, with point lanes, a (b, q, m,
// point)), its leader is the only writer of the sample's grad_loc / grad_attn and stores them
// (no atomics, no zero fill); otherwise one atomic per group into zeroed buffers.
// Gradients accumulate in the accumulation type (float for half / bf16); on sm_90 the fp32
// grad_value atomics are 16-byte vector atomics. The forward writes every output element.
// grad_value is zeroed by a small resident fill kernel; on sm_90 the backward is launched as
// its programmatic dependent, so a small call's backward computes its sample gradients while
// the fill runs and adds into grad_value after it (a second pass over the corners).
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "msda_3d.h"
#include "msda_3d_common.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// What thread idx of n works on: G * point_lanes threads per (b, q, m), taken head by head (m
// outermost), so the resident threads sample one head's slice of value and grad_value, 1 / M
// of them (2 x 5 MB at the encoder's size, which L2 holds), rather than every head at once
// (2 x 41 MB, which it does not). bqm is the flat (b, q, m) index of the layouts.
template <typename index_t>
struct ThreadSlot {
  index_t bqm, b, m;
  index_t pl;  // point lane
  index_t cg;  // channel group
};

template <typename index_t>
__device__ __forceinline__ ThreadSlot<index_t> thread_slot(index_t idx, index_t n, index_t G,
                                                           int point_lanes, index_t Q,
                                                           index_t M) {
  const index_t lanes = G * point_lanes;
  const index_t grp = idx / lanes;  // m * (B * Q) + b * Q + q
  ThreadSlot<index_t> t;
  t.pl = (idx - grp * lanes) / G;
  t.cg = idx - grp * lanes - t.pl * G;
  const index_t BQ = n / lanes / M;
  t.m = grp / BQ;
  const index_t bq = grp - t.m * BQ;
  t.b = bq / Q;
  t.bqm = bq * M + t.m;
  return t;
}

// Level l as a backward thread of (b, m, first channel c0) samples it: its shape and the
// offset in value and grad_value of the thread's channels at the level's first key
template <typename index_t>
struct LevelSlot {
  index_t X, Y, Z;
  index_t v_off;
};

template <typename index_t>
__device__ __forceinline__ LevelSlot<index_t> level_slot(const int64_t* shapes,
                                                         const int64_t* starts, index_t l,
                                                         index_t b, index_t S, index_t M,
                                                         index_t m, index_t Dh, index_t c0) {
  LevelSlot<index_t> lv;
  lv.X = static_cast<index_t>(shapes[3 * l]);
  lv.Y = static_cast<index_t>(shapes[3 * l + 1]);
  lv.Z = static_cast<index_t>(shapes[3 * l + 2]);
  lv.v_off = ((b * S + static_cast<index_t>(starts[l])) * M + m) * Dh + c0;
  return lv;
}

// the trilinear corners of sample s (normalized location loc[3 s..3 s + 3)) in level lv
template <typename acc_t, typename index_t>
__device__ __forceinline__ void sample_corners(const acc_t* loc, index_t s,
                                               const LevelSlot<index_t>& lv,
                                               TrilinearCorners<acc_t, index_t>& t) {
  trilinear_corners<acc_t, index_t>(loc[3 * s] * lv.X - acc_t(0.5),
                                    loc[3 * s + 1] * lv.Y - acc_t(0.5),
                                    loc[3 * s + 2] * lv.Z - acc_t(0.5), lv.X, lv.Y, lv.Z, t);
}

template <typename scalar_t, int VEC>
__device__ __forceinline__ Vec<scalar_t, VEC> load_vec(const scalar_t* p) {
  return *reinterpret_cast<const Vec<scalar_t, VEC>*>(p);
}

// grad[0..VEC) += val[0..VEC) atomically
template <typename acc_t, int VEC>
__device__ __forceinline__ void atomic_add_vec(acc_t* p, const acc_t (&val)[VEC]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (VEC == 4 && std::is_same<acc_t, float>::value) {
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(val[0], val[1], val[2], val[3]));
    return;
  }
  if constexpr (VEC == 2 && std::is_same<acc_t, float>::value) {
    atomicAdd(reinterpret_cast<float2*>(p), make_float2(val[0], val[1]));
    return;
  }
#endif
  TRACKOCC_UNROLL
  for (int i = 0; i < VEC; ++i) atomicAdd(p + i, val[i]);
}

// grad_value[0..VEC) += g[0..VEC) * wk atomically
template <typename acc_t, int VEC>
__device__ __forceinline__ void add_value_grad(acc_t* p, const acc_t (&g)[VEC], acc_t wk) {
  acc_t add[VEC];
  TRACKOCC_UNROLL
  for (int i = 0; i < VEC; ++i) add[i] = g[i] * wk;
  atomic_add_vec<acc_t, VEC>(p, add);
}

// Programmatic dependent launch (sm_90): the zero fill of grad_value lets the backward start at
// once (launch_dependents); the backward waits for the fill to finish (and its stores to be
// visible) only before its first grad_value atomic. Both are no-ops without a PDL launch and
// compile to nothing below sm_90, where the host launches without PDL (use_pdl).
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_primary_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Zeroes n_bytes (a multiple of 4) at p (16-byte aligned): 16-byte stores, grid-stride.
__global__ void zero_fill_kernel(char* __restrict__ p, int64_t n_bytes) {
  allow_dependent_launch();
  const int64_t chunks = n_bytes / 16;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint4* q = reinterpret_cast<uint4*>(p);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < chunks;
       i += stride)
    q[i] = make_uint4(0u, 0u, 0u, 0u);
  const int64_t tail = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < (n_bytes - chunks * 16) / 4) reinterpret_cast<uint32_t*>(q + chunks)[tail] = 0u;
}

// kPointLanes false: point_lanes is 1 (the layout of large calls, compiled without the lanes)
template <typename scalar_t, typename acc_t, typename index_t, int VEC, bool kPointLanes>
__global__ void msda3d_fwd_kernel(index_t n, index_t S, index_t M, index_t Dh, index_t Q,
                                  index_t L, index_t P, int point_lanes_arg,
                                  const scalar_t* __restrict__ value,
                                  const int64_t* __restrict__ shapes,
                                  const int64_t* __restrict__ starts,
                                  const acc_t* __restrict__ loc,
                                  const acc_t* __restrict__ attn,
                                  scalar_t* __restrict__ out) {
  const int point_lanes = kPointLanes ? point_lanes_arg : 1;
  // with point lanes, every lane of a warp runs to the shuffles; tail lanes store nothing
  const index_t raw = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (point_lanes == 1 && raw >= n) return;
  const bool active = raw < n;
  const index_t idx = active ? raw : n - 1;
  const index_t G = Dh / VEC;
  const index_t lanes = G * point_lanes;  // threads per (b, q, m)
  const ThreadSlot<index_t> slot = thread_slot(idx, n, G, point_lanes, Q, M);
  const index_t bqm = slot.bqm, b = slot.b, m = slot.m, pl = slot.pl, c0 = slot.cg * VEC;
  const index_t stride = M * Dh;
  acc_t sum[VEC];
  TRACKOCC_UNROLL
  for (int i = 0; i < VEC; ++i) sum[i] = 0;
  TrilinearCorners<acc_t, index_t> t;
  for (index_t l = 0; l < L; ++l) {
    const index_t X = static_cast<index_t>(shapes[3 * l]);
    const index_t Y = static_cast<index_t>(shapes[3 * l + 1]);
    const index_t Z = static_cast<index_t>(shapes[3 * l + 2]);
    const scalar_t* v = value + ((b * S + static_cast<index_t>(starts[l])) * M + m) * Dh + c0;
    for (index_t p = pl; p < P; p += point_lanes) {
      const index_t s = (bqm * L + l) * P + p;
      trilinear_corners<acc_t, index_t>(loc[3 * s] * X - acc_t(0.5),
                                        loc[3 * s + 1] * Y - acc_t(0.5),
                                        loc[3 * s + 2] * Z - acc_t(0.5), X, Y, Z, t);
      if (!t.any) continue;
      const acc_t w = attn[s];
      TRACKOCC_UNROLL
      for (int k = 0; k < 8; ++k) {
        if (!t.valid[k]) continue;
        const Vec<scalar_t, VEC> val = load_vec<scalar_t, VEC>(v + t.key[k] * stride);
        const acc_t wk = w * t.w[k];
        TRACKOCC_UNROLL
        for (int i = 0; i < VEC; ++i) sum[i] += wk * static_cast<acc_t>(val.v[i]);
      }
    }
  }
  for (index_t off = G; off < lanes; off <<= 1) {  // add the point lanes' partial sums
    TRACKOCC_UNROLL
    for (int i = 0; i < VEC; ++i) sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], off);
  }
  if (!active || pl != 0) return;
  Vec<scalar_t, VEC> res;
  TRACKOCC_UNROLL
  for (int i = 0; i < VEC; ++i) res.v[i] = static_cast<scalar_t>(sum[i]);
  *reinterpret_cast<Vec<scalar_t, VEC>*>(out + bqm * Dh + c0) = res;
}

template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, int group) {
  for (int off = group >> 1; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// kTwoPass: the sample gradients first (reading value), then, after the grad_value fill has
// finished, the grad_value atomics (corners recomputed); else one pass, waiting up front.
template <typename scalar_t, typename acc_t, typename index_t, int VEC, bool EXCLUSIVE,
          bool kPointLanes, bool kTwoPass>
__global__ void msda3d_bwd_kernel(index_t n, index_t S, index_t M, index_t Dh, index_t Q,
                                  index_t L, index_t P, int point_lanes_arg, int group,
                                  const scalar_t* __restrict__ value,
                                  const int64_t* __restrict__ shapes,
                                  const int64_t* __restrict__ starts,
                                  const acc_t* __restrict__ loc,
                                  const acc_t* __restrict__ attn,
                                  const scalar_t* __restrict__ grad_out,
                                  acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_loc,
                                  acc_t* __restrict__ grad_attn) {
  const int point_lanes = kPointLanes ? point_lanes_arg : 1;
  // every lane of a warp runs the whole loop (shuffles need them); tail lanes contribute 0
  const index_t raw = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = raw < n;
  const index_t idx = active ? raw : n - 1;
  const index_t G = Dh / VEC;
  const ThreadSlot<index_t> slot = thread_slot(idx, n, G, point_lanes, Q, M);
  const index_t bqm = slot.bqm, b = slot.b, m = slot.m, pl = slot.pl, cg = slot.cg;
  const index_t c0 = cg * VEC;
  const index_t stride = M * Dh;
  acc_t g[VEC];
  {
    const Vec<scalar_t, VEC> gv = load_vec<scalar_t, VEC>(grad_out + bqm * Dh + c0);
    TRACKOCC_UNROLL
    for (int i = 0; i < VEC; ++i) g[i] = active ? static_cast<acc_t>(gv.v[i]) : acc_t(0);
  }
  const bool leader = active && (cg % group) == 0;
  TrilinearCorners<acc_t, index_t> t;
  if (!kTwoPass) wait_for_primary_grid();
  for (index_t l = 0; l < L; ++l) {
    const LevelSlot<index_t> lv = level_slot(shapes, starts, l, b, S, M, m, Dh, c0);
    const index_t X = lv.X, Y = lv.Y, Z = lv.Z;
    for (index_t p = pl; p < P; p += point_lanes) {
      const index_t s = (bqm * L + l) * P + p;
      sample_corners(loc, s, lv, t);
      const acc_t w = attn[s];
      acc_t ga = 0, gx = 0, gy = 0, gz = 0;
      TRACKOCC_UNROLL
      for (int k = 0; k < 8; ++k) {
        if (!t.valid[k]) continue;
        const index_t off = lv.v_off + t.key[k] * stride;
        const Vec<scalar_t, VEC> val = load_vec<scalar_t, VEC>(value + off);
        acc_t dot = 0;
        TRACKOCC_UNROLL
        for (int i = 0; i < VEC; ++i) dot += g[i] * static_cast<acc_t>(val.v[i]);
        ga += t.w[k] * dot;
        gx += t.dw[k][0] * dot;
        gy += t.dw[k][1] * dot;
        gz += t.dw[k][2] * dot;
        if (!kTwoPass && active && w != acc_t(0))
          add_value_grad<acc_t, VEC>(grad_value + off, g, w * t.w[k]);
      }
      ga = group_sum(ga, group);
      gx = group_sum(gx, group);
      gy = group_sum(gy, group);
      gz = group_sum(gz, group);
      if (EXCLUSIVE) {  // leader = the sample's first lane; ga, gx, gy, gz are 0 if !t.any
        if (leader) {
          grad_attn[s] = ga;
          grad_loc[3 * s] = w * gx * static_cast<acc_t>(X);
          grad_loc[3 * s + 1] = w * gy * static_cast<acc_t>(Y);
          grad_loc[3 * s + 2] = w * gz * static_cast<acc_t>(Z);
        }
      } else if (leader && t.any) {
        atomicAdd(grad_attn + s, ga);
        atomicAdd(grad_loc + 3 * s, w * gx * static_cast<acc_t>(X));
        atomicAdd(grad_loc + 3 * s + 1, w * gy * static_cast<acc_t>(Y));
        atomicAdd(grad_loc + 3 * s + 2, w * gz * static_cast<acc_t>(Z));
      }
    }
  }
  if (!kTwoPass) return;
  wait_for_primary_grid();
  if (!active) return;
  for (index_t l = 0; l < L; ++l) {
    const LevelSlot<index_t> lv = level_slot(shapes, starts, l, b, S, M, m, Dh, c0);
    for (index_t p = pl; p < P; p += point_lanes) {
      const index_t s = (bqm * L + l) * P + p;
      const acc_t w = attn[s];
      if (w == acc_t(0)) continue;
      sample_corners(loc, s, lv, t);
      TRACKOCC_UNROLL
      for (int k = 0; k < 8; ++k) {
        if (!t.valid[k]) continue;
        add_value_grad<acc_t, VEC>(grad_value + lv.v_off + t.key[k] * stride, g, w * t.w[k]);
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

// channels per thread: 4, 2 or 1, dividing Dh, with every pointer aligned for vector access
inline int pick_vec(int Dh, std::initializer_list<const void*> ptrs, size_t elem,
                    const void* acc_ptr = nullptr, size_t acc_elem = 0) {
  for (int vec : {4, 2}) {
    if (Dh % vec != 0) continue;
    bool ok = true;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (vec * elem) == 0;
    if (acc_ptr != nullptr)
      ok = ok && reinterpret_cast<uintptr_t>(acc_ptr) % (vec * acc_elem) == 0;
    if (ok) return vec;
  }
  return 1;
}

// threads per (b, q, m, channel group) sharing its points: 1 when one thread per (b, q, m,
// channel group) already fills the device with resident threads; else the largest power of
// two dividing P such that the lanes of one (b, q, m), G * point_lanes, divide a warp (the
// forward's shuffles and the backward's groups then stay inside aligned lane groups)
inline int pick_point_lanes(int64_t threads, int G, int P) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident =
      static_cast<int64_t>(prop->multiProcessorCount) * prop->maxThreadsPerMultiProcessor;
  if (threads >= resident || G > 32 || (G & (G - 1)) != 0) return 1;
  int lanes = 1;
  while (G * lanes * 2 <= 32 && P % (lanes * 2) == 0) lanes *= 2;
  return lanes;
}

// Whether the backward may overlap the grad_value fill (programmatic dependent launch): the
// kernel's code on this device was compiled for sm_90 or later, so its griddepcontrol.wait is
// real, and TRACKOCC_MSDA_PDL is not "0" (to time or debug without it).
inline bool use_pdl(const void* kernel) {
  const char* env = std::getenv("TRACKOCC_MSDA_PDL");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  return attr.ptxVersion >= 90;
}

// kernel<<<blocks, kThreads, 0, stream>>>(args...), as a programmatic dependent of the kernel
// before it on the stream when pdl is set
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), unsigned int blocks, cudaStream_t stream,
                   bool pdl, Args&&... args) {
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12000
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
#else
  (void)pdl;
  kernel<<<blocks, kThreads, 0, stream>>>(std::forward<Args>(args)...);
#endif
}

// Zeroes t (an accumulation buffer) on stream with a grid small enough to stay resident beside
// the backward that follows it. Returns whether it launched the fill (not for an empty t): only
// then may the backward be its programmatic dependent (else it would be the dependent of
// whatever kernel came before, which may still be writing its inputs).
bool zero_fill(at::Tensor& t, cudaStream_t stream) {
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (bytes == 0) return false;
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && bytes % 4 == 0,
              "ms_deform_attn_3d: grad_value buffer is not 16-byte aligned");
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t needed = (bytes / 16 + kThreads - 1) / kThreads + 1;
  const int64_t blocks = std::min<int64_t>(needed, 4 * prop->multiProcessorCount);
  zero_fill_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
      static_cast<char*>(t.data_ptr()), bytes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <int V>
struct VecTag {
  static constexpr int value = V;
};

template <typename F>
void dispatch_index_vec(bool small, int vec, F&& launch) {
  if (small) {
    if (vec == 4) launch(int(0), VecTag<4>());
    else if (vec == 2) launch(int(0), VecTag<2>());
    else launch(int(0), VecTag<1>());
  } else {
    if (vec == 4) launch(int64_t(0), VecTag<4>());
    else if (vec == 2) launch(int64_t(0), VecTag<2>());
    else launch(int64_t(0), VecTag<1>());
  }
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
    const int vec = pick_vec(Dh, {value.data_ptr(), output.data_ptr()}, sizeof(scalar_t));
    auto launch = [&](auto index_zero, auto vec_tag) {
      using index_t = decltype(index_zero);
      constexpr int VEC = decltype(vec_tag)::value;
      const int point_lanes = pick_point_lanes(n / VEC, Dh / VEC, P);
      const int64_t threads = n / VEC * point_lanes;
      auto kernel = point_lanes > 1 ? msda3d_fwd_kernel<scalar_t, acc_t, index_t, VEC, true>
                                    : msda3d_fwd_kernel<scalar_t, acc_t, index_t, VEC, false>;
      kernel<<<num_blocks(threads), kThreads, 0, stream>>>(
          static_cast<index_t>(threads), static_cast<index_t>(S), M, Dh, Q, L, P, point_lanes,
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
          attention_weights.data_ptr<acc_t>(), output.data_ptr<scalar_t>());
    };
    dispatch_index_vec(small, vec, launch);
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
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_3d_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const int vec = pick_vec(Dh, {value.data_ptr(), grad_output.data_ptr()}, sizeof(scalar_t),
                             grad_value.data_ptr(), sizeof(acc_t));
    auto launch = [&](auto index_zero, auto vec_tag) {
      using index_t = decltype(index_zero);
      constexpr int VEC = decltype(vec_tag)::value;
      int group = 1;  // largest power of two dividing Dh / VEC, at most a warp
      while (group < 32 && (Dh / VEC) % (group * 2) == 0) group *= 2;
      const int point_lanes = pick_point_lanes(n / VEC, Dh / VEC, P);
      const int64_t threads = n / VEC * point_lanes;
      auto run = [&](auto exclusive_tag, auto lanes_tag) {
        // small calls (point lanes) read value for the sample gradients while the fill runs
        constexpr bool kLanes = decltype(lanes_tag)::value;
        auto kernel = msda3d_bwd_kernel<scalar_t, acc_t, index_t, VEC,
                                        decltype(exclusive_tag)::value, kLanes, kLanes>;
        const bool filled = zero_fill(grad_value, stream);
        launch_kernel(kernel, num_blocks(threads), stream,
                      filled && use_pdl(reinterpret_cast<const void*>(kernel)),
                      static_cast<index_t>(threads), static_cast<index_t>(S),
                      static_cast<index_t>(M), static_cast<index_t>(Dh),
                      static_cast<index_t>(Q), static_cast<index_t>(L),
                      static_cast<index_t>(P), point_lanes, group,
                      value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                      level_start_index.data_ptr<int64_t>(),
                      sampling_locations.data_ptr<acc_t>(), attention_weights.data_ptr<acc_t>(),
                      grad_output.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(),
                      grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>());
      };
      if (point_lanes > 1) {  // G is then a power of two: group == G
        run(std::true_type(), std::true_type());
      } else if (group == Dh / VEC) {
        run(std::true_type(), std::false_type());
      } else {  // several groups per (b, q, m) add into the same sample gradients
        grad_loc.zero_();
        grad_attn.zero_();
        run(std::false_type(), std::false_type());
      }
    };
    dispatch_index_vec(small, vec, launch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc
