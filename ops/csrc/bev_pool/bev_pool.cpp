// BEVPoolv2: argument checks, device dispatch and the CPU implementation.
#include "bev_pool.h"

#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>

namespace trackocc {
namespace {

void check_common(const at::Tensor& depth, const at::Tensor& feat,
                  std::initializer_list<std::pair<const char*, const at::Tensor*>> ranks) {
  TORCH_CHECK(depth.dim() == 5 && feat.dim() == 5,
              "bev_pool_v2: depth must be (B, N, D, h, w) and feat (B, N, h, w, C)");
  TORCH_CHECK(depth.scalar_type() == feat.scalar_type(),
              "bev_pool_v2: depth and feat must share a dtype, got ", depth.scalar_type(),
              " and ", feat.scalar_type());
  TORCH_CHECK(depth.is_contiguous() && feat.is_contiguous(),
              "bev_pool_v2: depth and feat must be contiguous");
  TORCH_CHECK(feat.device() == depth.device(), "bev_pool_v2: depth and feat on different devices");
  for (const auto& r : ranks) {
    TORCH_CHECK(r.second->scalar_type() == at::kInt && r.second->dim() == 1 &&
                    r.second->is_contiguous(),
                "bev_pool_v2: ", r.first, " must be a contiguous 1-D int32 tensor");
    TORCH_CHECK(r.second->device() == depth.device(), "bev_pool_v2: ", r.first, " is on ",
                r.second->device(), " but depth is on ", depth.device());
  }
}

// out (B, C, V) with V = Z * Y * X; a voxel rank r = b * V + v
template <typename scalar_t>
void forward_cpu(const scalar_t* depth, const scalar_t* feat, const int* ranks_depth,
                 const int* ranks_feat, const int* ranks_bev, const int* starts,
                 const int* lengths, int64_t n_intervals, int64_t c, int64_t V, scalar_t* out) {
  using acc_t = at::acc_type<scalar_t, true>;
  at::parallel_for(0, n_intervals, 256, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(c);
    for (int64_t i = begin; i < end; ++i) {
      if (lengths[i] <= 0) continue;  // padding of fixed-size ranks: pools nothing
      std::fill(sum.begin(), sum.end(), acc_t(0));
      const int64_t s = starts[i];
      for (int64_t p = s; p < s + lengths[i]; ++p) {
        const acc_t d = static_cast<acc_t>(depth[ranks_depth[p]]);
        const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c;
        for (int64_t k = 0; k < c; ++k) sum[k] += d * static_cast<acc_t>(f[k]);
      }
      const int64_t b = ranks_bev[s] / V, v = ranks_bev[s] - b * V;
      scalar_t* o = out + b * c * V + v;
      for (int64_t k = 0; k < c; ++k) o[k * V] = static_cast<scalar_t>(sum[k]);
    }
  });
}

template <typename scalar_t>
void backward_cpu(const scalar_t* grad_out, const scalar_t* depth, const scalar_t* feat,
                  const int* ranks_depth, const int* ranks_feat, const int* ranks_bev,
                  const int* order, int64_t n_points, int64_t c, int64_t V,
                  scalar_t* grad_depth, scalar_t* grad_feat) {
  using acc_t = at::acc_type<scalar_t, true>;
  // d out / d depth: one depth element per point (ranks_depth unique by construction)
  at::parallel_for(0, n_points, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = ranks_bev[p] / V, v = ranks_bev[p] - b * V;
      const scalar_t* g = grad_out + b * c * V + v;
      const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c;
      acc_t dot = 0;
      for (int64_t k = 0; k < c; ++k)
        dot += static_cast<acc_t>(g[k * V]) * static_cast<acc_t>(f[k]);
      grad_depth[ranks_depth[p]] = static_cast<scalar_t>(dot);
    }
  });
  // d out / d feat: the points of one feature pixel form a run in `order`; the first position
  // of each run sums it, so runs are processed in parallel without races
  at::parallel_for(0, n_points, 1024, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(c);
    for (int64_t j = begin; j < end; ++j) {
      const int f = ranks_feat[order[j]];
      if (j > 0 && ranks_feat[order[j - 1]] == f) continue;
      std::fill(sum.begin(), sum.end(), acc_t(0));
      for (int64_t k = j; k < n_points && ranks_feat[order[k]] == f; ++k) {
        const int p = order[k];
        const acc_t d = static_cast<acc_t>(depth[ranks_depth[p]]);
        const int64_t b = ranks_bev[p] / V, v = ranks_bev[p] - b * V;
        const scalar_t* g = grad_out + b * c * V + v;
        for (int64_t ch = 0; ch < c; ++ch) sum[ch] += d * static_cast<acc_t>(g[ch * V]);
      }
      scalar_t* gf = grad_feat + static_cast<int64_t>(f) * c;
      for (int64_t ch = 0; ch < c; ++ch) gf[ch] = static_cast<scalar_t>(sum[ch]);
    }
  });
}

}  // namespace

at::Tensor bev_pool_v2_forward(const at::Tensor& depth, const at::Tensor& feat,
                               const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                               const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths,
                               const std::vector<int64_t>& out_shape) {
  check_common(depth, feat,
               {{"ranks_depth", &ranks_depth}, {"ranks_feat", &ranks_feat},
                {"ranks_bev", &ranks_bev}, {"interval_starts", &interval_starts},
                {"interval_lengths", &interval_lengths}});
  TORCH_CHECK(out_shape.size() == 5 && out_shape[4] == feat.size(4),
              "bev_pool_v2: out_shape must be (B, Z, Y, X, C) with C = feat.size(4)");
  const std::vector<int64_t> out_sizes{out_shape[0], out_shape[4], out_shape[1], out_shape[2],
                                       out_shape[3]};
  if (depth.is_cuda()) {
#ifdef WITH_CUDA
    // the CUDA forward writes every element, zeros included
    at::Tensor out = at::empty(out_sizes, feat.options());
    if (out.numel() > 0)
      bev_pool_v2_forward_cuda(depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_starts,
                               interval_lengths, out);
    return out;
#else
    TORCH_CHECK(false, "bev_pool_v2: trackocc._ext was built without CUDA");
#endif
  }
  at::Tensor out = at::zeros(out_sizes, feat.options());
  const int64_t n_intervals = interval_starts.numel();
  if (n_intervals == 0 || out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cpu", [&] {
    forward_cpu<scalar_t>(depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
                          ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
                          ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
                          interval_lengths.data_ptr<int>(), n_intervals, feat.size(4),
                          out_shape[1] * out_shape[2] * out_shape[3], out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> bev_pool_v2_backward(const at::Tensor& grad_out, const at::Tensor& depth,
                                             const at::Tensor& feat,
                                             const at::Tensor& ranks_depth,
                                             const at::Tensor& ranks_feat,
                                             const at::Tensor& ranks_bev,
                                             const at::Tensor& interval_starts,
                                             const at::Tensor& interval_lengths,
                                             const c10::optional<at::Tensor>& feat_order) {
  check_common(depth, feat,
               {{"ranks_depth", &ranks_depth}, {"ranks_feat", &ranks_feat},
                {"ranks_bev", &ranks_bev}, {"interval_starts", &interval_starts},
                {"interval_lengths", &interval_lengths}});
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.dim() == 5 &&
                  grad_out.scalar_type() == feat.scalar_type() &&
                  grad_out.size(1) == feat.size(4),
              "bev_pool_v2: grad_out must be a contiguous (B, C, Z, Y, X) tensor of feat's dtype");
  TORCH_CHECK(interval_starts.numel() == interval_lengths.numel(),
              "bev_pool_v2: interval_starts and interval_lengths differ in length");
  if (depth.is_cuda()) {
#ifdef WITH_CUDA
    const auto acc = depth.options().dtype(
        at::toAccumulateType(depth.scalar_type(), /*is_cuda=*/true));
    at::Tensor grad_depth = at::zeros(depth.sizes(), acc);
    at::Tensor grad_feat = at::zeros(feat.sizes(), acc);
    bev_pool_v2_backward_cuda(grad_out, depth, feat, ranks_depth, ranks_feat, ranks_bev,
                              interval_starts, interval_lengths, grad_depth, grad_feat);
    return {grad_depth.to(depth.scalar_type()), grad_feat.to(feat.scalar_type())};
#else
    TORCH_CHECK(false, "bev_pool_v2: trackocc._ext was built without CUDA");
#endif
  }
  TORCH_CHECK(feat_order.has_value() && feat_order->numel() == ranks_feat.numel(),
              "bev_pool_v2: the CPU backward needs feat_order (argsort of ranks_feat)");
  check_common(depth, feat, {{"feat_order", &*feat_order}});
  at::Tensor grad_feat = at::zeros_like(feat);
  at::Tensor grad_depth = at::zeros_like(depth);
  if (ranks_depth.numel() == 0) return {grad_depth, grad_feat};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cpu", [&] {
    backward_cpu<scalar_t>(grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
                           feat.data_ptr<scalar_t>(), ranks_depth.data_ptr<int>(),
                           ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
                           feat_order->data_ptr<int>(), ranks_depth.numel(), feat.size(4),
                           grad_out.size(2) * grad_out.size(3) * grad_out.size(4),
                           grad_depth.data_ptr<scalar_t>(), grad_feat.data_ptr<scalar_t>());
  });
  return {grad_depth, grad_feat};
}

}  // namespace trackocc
