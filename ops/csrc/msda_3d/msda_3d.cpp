// 3D multi-scale deformable attention: argument checks, device dispatch and the CPU version.
#include "msda_3d.h"

#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>

#include "msda_3d_common.h"

namespace trackocc {
namespace {

struct Dims {
  int64_t B, S, M, Dh, Q, L, P;
};

Dims check_inputs(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                  const at::Tensor& loc, const at::Tensor& attn) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn_3d: value must be (B, S, M, Dh)");
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 3,
              "ms_deform_attn_3d: sampling_locations must be (B, Q, M, L, P, 3)");
  Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
         loc.size(1),   loc.size(3),   loc.size(4)};
  TORCH_CHECK(loc.size(0) == d.B && loc.size(2) == d.M,
              "ms_deform_attn_3d: sampling_locations disagree with value on (B, M)");
  TORCH_CHECK(attn.dim() == 5 && attn.size(0) == d.B && attn.size(1) == d.Q &&
                  attn.size(2) == d.M && attn.size(3) == d.L && attn.size(4) == d.P,
              "ms_deform_attn_3d: attention_weights must be (B, Q, M, L, P)");
  TORCH_CHECK(shapes.dim() == 2 && shapes.size(0) == d.L && shapes.size(1) == 3 &&
                  shapes.scalar_type() == at::kLong,
              "ms_deform_attn_3d: spatial_shapes must be (L, 3) int64");
  TORCH_CHECK(starts.dim() == 1 && starts.size(0) == d.L && starts.scalar_type() == at::kLong,
              "ms_deform_attn_3d: level_start_index must be (L,) int64");
  const auto loc_dtype = at::toAccumulateType(value.scalar_type(), /*is_cuda=*/true);
  TORCH_CHECK(loc.scalar_type() == loc_dtype && attn.scalar_type() == loc_dtype,
              "ms_deform_attn_3d: sampling_locations and attention_weights must be ", loc_dtype,
              " for value of dtype ", value.scalar_type());
  for (const at::Tensor* t : {&value, &shapes, &starts, &loc, &attn}) {
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn_3d: inputs must be contiguous");
    TORCH_CHECK(t->device() == value.device(), "ms_deform_attn_3d: inputs on different devices");
  }
  return d;
}

template <typename scalar_t, typename acc_t = at::acc_type<scalar_t, true>>
void forward_cpu(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                 const acc_t* loc, const acc_t* attn, const Dims& d, scalar_t* out) {
  const int64_t stride = d.M * d.Dh;
  at::parallel_for(0, d.B * d.Q, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(d.Dh);
    TrilinearCorners<acc_t> t;
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / d.Q;
      for (int64_t m = 0; m < d.M; ++m) {
        std::fill(sum.begin(), sum.end(), acc_t(0));
        const int64_t lp0 = (bq * d.M + m) * d.L * d.P;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t X = shapes[3 * l], Y = shapes[3 * l + 1], Z = shapes[3 * l + 2];
          const scalar_t* v = value + ((b * d.S + starts[l]) * d.M + m) * d.Dh;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t s = lp0 + l * d.P + p;
            trilinear_corners<acc_t, int64_t>(loc[3 * s] * X - acc_t(0.5), loc[3 * s + 1] * Y - acc_t(0.5),
                                     loc[3 * s + 2] * Z - acc_t(0.5), X, Y, Z, t);
            if (!t.any) continue;
            const acc_t w = attn[s];
            for (int64_t c = 0; c < d.Dh; ++c)
              sum[c] += w * trilinear_value<scalar_t, acc_t, int64_t>(v + c, stride, t);
          }
        }
        scalar_t* o = out + (bq * d.M + m) * d.Dh;
        for (int64_t c = 0; c < d.Dh; ++c) o[c] = static_cast<scalar_t>(sum[c]);
      }
    }
  });
}

template <typename scalar_t, typename acc_t = at::acc_type<scalar_t, true>>
void backward_cpu(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                  const acc_t* loc, const acc_t* attn, const scalar_t* grad_out, const Dims& d,
                  acc_t* grad_value, acc_t* grad_loc, acc_t* grad_attn) {
  const int64_t stride = d.M * d.Dh;
  // (b, m) pairs write disjoint slices of grad_value, so they run in parallel without races
  at::parallel_for(0, d.B * d.M, 1, [&](int64_t begin, int64_t end) {
    TrilinearCorners<acc_t> t;
    for (int64_t bm = begin; bm < end; ++bm) {
      const int64_t b = bm / d.M, m = bm % d.M;
      for (int64_t q = 0; q < d.Q; ++q) {
        const int64_t bqm = (b * d.Q + q) * d.M + m;
        const scalar_t* g = grad_out + bqm * d.Dh;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t X = shapes[3 * l], Y = shapes[3 * l + 1], Z = shapes[3 * l + 2];
          const int64_t v_off = ((b * d.S + starts[l]) * d.M + m) * d.Dh;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t s = (bqm * d.L + l) * d.P + p;
            trilinear_corners<acc_t, int64_t>(loc[3 * s] * X - acc_t(0.5), loc[3 * s + 1] * Y - acc_t(0.5),
                                     loc[3 * s + 2] * Z - acc_t(0.5), X, Y, Z, t);
            if (!t.any) continue;
            const acc_t w = attn[s];
            acc_t g_attn = 0, g_xyz[3] = {0, 0, 0};
            for (int64_t c = 0; c < d.Dh; ++c) {
              acc_t dxyz[3];
              const acc_t gc = static_cast<acc_t>(g[c]);
              const acc_t val =
                  trilinear_value_grad<scalar_t, acc_t, int64_t>(value + v_off + c, stride, t, dxyz);
              g_attn += gc * val;
              for (int a = 0; a < 3; ++a) g_xyz[a] += gc * w * dxyz[a];
              for (int n = 0; n < 8; ++n)
                if (t.valid[n]) grad_value[v_off + c + t.key[n] * stride] += gc * w * t.w[n];
            }
            grad_attn[s] = g_attn;
            grad_loc[3 * s] = g_xyz[0] * X;
            grad_loc[3 * s + 1] = g_xyz[1] * Y;
            grad_loc[3 * s + 2] = g_xyz[2] * Z;
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_3d_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  // the CUDA kernel writes every element; the CPU one adds into zeros
  at::Tensor out = value.is_cuda() ? at::empty({d.B, d.Q, d.M * d.Dh}, value.options())
                                   : at::zeros({d.B, d.Q, d.M * d.Dh}, value.options());
  if (out.numel() == 0) return out;
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    ms_deform_attn_3d_forward_cuda(value, spatial_shapes, level_start_index, sampling_locations,
                                   attention_weights, out);
    return out;
#else
    TORCH_CHECK(false, "ms_deform_attn_3d: trackocc._ext was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_3d_forward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    forward_cpu<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                          level_start_index.data_ptr<int64_t>(),
                          sampling_locations.data_ptr<acc_t>(),
                          attention_weights.data_ptr<acc_t>(), d, out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_3d_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == d.B * d.Q * d.M * d.Dh,
              "ms_deform_attn_3d: grad_output must be a contiguous (B, Q, M*Dh) tensor of "
              "value's dtype");
  const auto acc_dtype = at::toAccumulateType(value.scalar_type(), /*is_cuda=*/true);
  auto opts = value.options().dtype(acc_dtype);
  // the CUDA code zeroes grad_value itself (overlapped with its backward) and stores (or, with
  // several writers per sample, zeroes and adds) the location and weight gradients
  const bool run = grad_output.numel() > 0 && d.L * d.P > 0;
  at::Tensor grad_value = run && value.is_cuda() ? at::empty(value.sizes(), opts)
                                                 : at::zeros(value.sizes(), opts);
  at::Tensor grad_loc = run && value.is_cuda() ? at::empty(sampling_locations.sizes(), opts)
                                               : at::zeros(sampling_locations.sizes(), opts);
  at::Tensor grad_attn = run && value.is_cuda() ? at::empty(attention_weights.sizes(), opts)
                                                : at::zeros(attention_weights.sizes(), opts);
  if (run) {
    if (value.is_cuda()) {
#ifdef WITH_CUDA
      ms_deform_attn_3d_backward_cuda(value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, grad_output,
                                      grad_value, grad_loc, grad_attn);
#else
      TORCH_CHECK(false, "ms_deform_attn_3d: trackocc._ext was built without CUDA");
#endif
    } else {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                      "ms_deform_attn_3d_backward_cpu", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        backward_cpu<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                               level_start_index.data_ptr<int64_t>(),
                               sampling_locations.data_ptr<acc_t>(),
                               attention_weights.data_ptr<acc_t>(),
                               grad_output.data_ptr<scalar_t>(), d, grad_value.data_ptr<acc_t>(),
                               grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>());
      });
    }
  }
  const auto dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_loc, grad_attn};
}

}  // namespace trackocc
