// Batched complex64 GEMM for the CPU: out[f] (+)= a[f] @ b[f].
//
// Why it exists: torch's complex matmul on the CPU goes to the BLAS torch was built with (MKL in
// the official wheels), which takes AVX2 code paths on AMD CPUs; the band contractions and the
// transforms' row stages then run at about half of what the vector units allow
// (bench/NOTES.md). This kernel is plain C++ with GCC vector extensions, compiled on the machine
// that runs it (-march=native), so the same source uses AVX-512 where the CPU has it and AVX2
// elsewhere.
//
// Method: the output is tiled into panels of NC complex columns (NV vectors of 8 complex numbers
// each, re/im interleaved as in memory). For each panel the matching columns of b are packed into
// a contiguous [K, 2*NC] buffer (one copy, any strides, conjugation never needed: callers pass
// operands as they are). The micro-kernel keeps R x NV output vectors in registers as two
// accumulators each: acc_r += re(a) * b_vec and acc_i += im(a) * b_vec, then
// y = acc_r + swap(acc_i) * (-1, +1, ...), which is the complex product written out. a is read
// by scalar broadcasts with any strides, so transposed operands cost nothing.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));

constexpr int NV = 2;          // vectors per panel
constexpr int NC = 8 * NV;     // complex columns per panel
constexpr int MR = 6;          // output rows per micro-kernel call
static_assert(NV % 2 == 0, "cgemm_taps packs a panel from NV / 2 vectors of real columns");

inline v16 load(const float* p) { v16 v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof(v)); }
inline v16 splat(float x) { return v16{} + x; }
inline v16 swap_re_im(v16 v) {
  return __builtin_shuffle(v, v16i{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
}

// R rows of a (row stride sam, k stride sak, in floats) times the packed panel p [K, 2*NC]
// into R rows of c (row stride ldc floats), ncols <= NC complex columns written.
template <int R>
void micro(const float* a, int64_t sam, int64_t sak, const float* p, int64_t K, float* c,
           int64_t ldc, int ncols, bool accumulate) {
  v16 acc_r[R][NV], acc_i[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc_r[r][j] = acc_i[r][j] = splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    v16 bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = load(p + k * 2 * NC + 16 * j);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float* ar = a + r * sam + k * sak;
      const v16 re = splat(ar[0]), im = splat(ar[1]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        acc_r[r][j] += re * bv[j];
        acc_i[r][j] += im * bv[j];
      }
    }
  }
  const v16 sign = {-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1};
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (ncols == NC) {
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        v16 y = acc_r[r][j] + swap_re_im(acc_i[r][j]) * sign;
        if (accumulate) y += load(cr + 16 * j);
        store(cr + 16 * j, y);
      }
    } else {
      float t[2 * NC];
      for (int j = 0; j < NV; ++j) store(t + 16 * j, acc_r[r][j] + swap_re_im(acc_i[r][j]) * sign);
      if (accumulate) {
        for (int q = 0; q < 2 * ncols; ++q) cr[q] += t[q];
      } else {
        std::memcpy(cr, t, sizeof(float) * 2 * ncols);
      }
    }
  }
}

using Micro = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, int,
                       bool);
constexpr Micro kTail[8] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>, micro<7>};
static_assert(MR <= 8, "kTail covers tails of up to 7 rows");

// All M rows of a (row stride sam, k stride sak, in floats) times the packed panel p [K, 2*NC]
// into c (row stride ldc floats): MR rows per micro-kernel call, then the tail.
inline void rows_times_panel(const float* a, int64_t sam, int64_t sak, int64_t M, const float* p,
                             int64_t K, float* c, int64_t ldc, int ncols, bool accumulate) {
  int64_t m = 0;
  for (; m + MR <= M; m += MR) micro<MR>(a + m * sam, sam, sak, p, K, c + m * ldc, ldc, ncols, accumulate);
  if (m < M) kTail[M - m](a + m * sam, sam, sak, p, K, c + m * ldc, ldc, ncols, accumulate);
}

}  // namespace

// a [F, M, K] complex64, b [F, K, N] complex64 or float32 (a real b, e.g. a filter, is packed as
// complex numbers with zero imaginary parts), any strides; out [F, M, N] complex64 with unit
// stride along N (any batch and row strides).
void cgemm(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out, bool accumulate) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3, "cgemm: 3-D operands expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat &&
                  (b.scalar_type() == at::kComplexFloat || b.scalar_type() == at::kFloat) &&
                  out.scalar_type() == at::kComplexFloat,
              "cgemm: complex64 a and out, complex64 or float32 b expected");
  const bool real_b = b.scalar_type() == at::kFloat;
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && out.device().is_cpu(), "cgemm: CPU only");
  TORCH_CHECK(out.stride(2) == 1 || out.size(2) <= 1, "cgemm: out needs unit stride along its last dimension");
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  TORCH_CHECK(b.size(0) == F && b.size(1) == K && out.size(0) == F && out.size(1) == M &&
                  out.size(2) == N,
              "cgemm: shapes do not match");
  const int64_t saf = 2 * a.stride(0), sam = 2 * a.stride(1), sak = 2 * a.stride(2);
  const int64_t bw = real_b ? 1 : 2;  // floats per element of b
  const int64_t sbf = bw * b.stride(0), sbk = bw * b.stride(1), sbn = bw * b.stride(2);
  const int64_t sof = 2 * out.stride(0), som = 2 * out.stride(1);
  const float* pa = reinterpret_cast<const float*>(a.const_data_ptr());
  const float* pb = reinterpret_cast<const float*>(b.const_data_ptr());
  float* po = reinterpret_cast<float*>(out.data_ptr());
  if (F == 0 || M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  const int64_t panels = (N + NC - 1) / NC;
  if (!real_b && sbn > 2 && sbf == 2 && F > 1 && K <= 64) {
    // b's columns lie far apart but neighbouring batch entries are adjacent (the transforms' row
    // stages: one batch entry per kept column, or per (b, o)): one task packs GROUP batch entries
    // at once, reading each run of GROUP complex numbers (one cache line) once and spreading it
    // over GROUP packs, then multiplies each. At K <= 64 the packs stay in L1.
    constexpr int64_t GROUP = 8;
    const int64_t groups = (F + GROUP - 1) / GROUP;
    at::parallel_for(0, groups * panels, 1, [&](int64_t lo, int64_t hi) {
      std::vector<float> packs(static_cast<size_t>(GROUP) * K * 2 * NC);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t f0 = (t % groups) * GROUP, n0 = (t / groups) * NC;
        const int g = static_cast<int>(std::min<int64_t>(GROUP, F - f0));
        const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
        if (nc < NC) std::fill(packs.begin(), packs.end(), 0.f);
        const float* bp = pb + f0 * 2 + n0 * sbn;
        for (int q = 0; q < nc; ++q)
          for (int64_t k = 0; k < K; ++k) {
            const float* src = bp + q * sbn + k * sbk;
            float* dst = packs.data() + k * 2 * NC + 2 * q;
            for (int e = 0; e < g; ++e) {
              dst[e * K * 2 * NC] = src[2 * e];
              dst[e * K * 2 * NC + 1] = src[2 * e + 1];
            }
          }
        for (int e = 0; e < g; ++e) {
          const float* af = pa + (f0 + e) * saf;
          const float* dst = packs.data() + e * K * 2 * NC;
          float* cf = po + (f0 + e) * sof + n0 * 2;
          rows_times_panel(af, sam, sak, M, dst, K, cf, som, nc, accumulate);
        }
      }
    });
    return;
  }
  // Where b's columns lie far apart (a gathering pack) and its batch entries are adjacent, they
  // share cache lines: take the batch index fastest then. Otherwise the panels of one batch
  // entry run in turn, so its rows of a stay in L1 (the forward contraction reads a transposed
  // filter band: batch-fastest there ran 1.37 ms against 1.02 ms on [325, 32, 64] x [64, 64]).
  const bool batch_fastest = !real_b && sbn > 2 && sbf == 2 && F > 1;
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = batch_fastest ? t % F : t / panels;
      const int64_t n0 = (batch_fastest ? t / F : t % panels) * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      const float* bp = pb + f * sbf + n0 * sbn;
      float* dst = pack.data();
      if (real_b) {  // real parts from b, imaginary parts zero
        std::fill(pack.begin(), pack.end(), 0.f);
        for (int64_t k = 0; k < K; ++k)
          for (int q = 0; q < nc; ++q) dst[k * 2 * NC + 2 * q] = bp[q * sbn + k * sbk];
      } else if (sbn == 2) {  // columns contiguous: one run per k
        for (int64_t k = 0; k < K; ++k) {
          std::memcpy(dst + k * 2 * NC, bp + k * sbk, sizeof(float) * 2 * nc);
          if (nc < NC) std::memset(dst + k * 2 * NC + 2 * nc, 0, sizeof(float) * 2 * (NC - nc));
        }
      } else {  // e.g. a transposed filter band: walk each column along k
        // In blocks of 16 k, so the block's lines of the pack stay in L1 while columns fill in.
        if (nc < NC) std::fill(pack.begin(), pack.end(), 0.f);
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
          const int64_t k1 = std::min<int64_t>(K, k0 + 16);
          for (int q = 0; q < nc; ++q)
            for (int64_t k = k0; k < k1; ++k) {
              dst[k * 2 * NC + 2 * q] = bp[q * sbn + k * sbk];
              dst[k * 2 * NC + 2 * q + 1] = bp[q * sbn + k * sbk + 1];
            }
        }
      }
      const float* af = pa + f * saf;
      float* cf = po + f * sof + n0 * 2;
      rows_times_panel(af, sam, sak, M, dst, K, cf, som, nc, accumulate);
    }
  });
}

// out[f] (+)= a[f] @ (sum_t e[f, t] * w[t]): a [F, M, K] complex64 (any strides), e [F, T]
// complex64, w [T, K, N] float32 with unit stride along N, out [F, M, N] complex64 with unit
// stride along N. This is a band contraction against a filter band that is never written out:
// the filter band of frequency f, sum_t e[f, t] w[t] (e: the DFT phases at the filter's T taps,
// w: the real filter, tap-major), is formed panel by panel while packing (2T real
// multiply-adds per packed complex number, reading w from cache), instead of a filter transform
// that writes F x K x N complex numbers to memory for the contraction to read back.
void cgemm_taps(const torch::Tensor& a, const torch::Tensor& e, const torch::Tensor& w,
                torch::Tensor& out, bool accumulate) {
  TORCH_CHECK(a.dim() == 3 && e.dim() == 2 && w.dim() == 3 && out.dim() == 3,
              "cgemm_taps: a [F, M, K], e [F, T], w [T, K, N], out [F, M, N] expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && e.scalar_type() == at::kComplexFloat &&
                  w.scalar_type() == at::kFloat && out.scalar_type() == at::kComplexFloat,
              "cgemm_taps: complex64 a, e and out, float32 w expected");
  TORCH_CHECK(a.device().is_cpu() && e.device().is_cpu() && w.device().is_cpu() && out.device().is_cpu(),
              "cgemm_taps: CPU only");
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), T = e.size(1), N = w.size(2);
  TORCH_CHECK(e.size(0) == F && w.size(0) == T && w.size(1) == K && out.size(0) == F &&
                  out.size(1) == M && out.size(2) == N,
              "cgemm_taps: shapes do not match");
  TORCH_CHECK((w.stride(2) == 1 || N <= 1) && (out.stride(2) == 1 || N <= 1),
              "cgemm_taps: w and out need unit stride along their last dimension");
  if (F == 0 || M == 0 || N == 0) return;
  if (K == 0 || T == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  const int64_t saf = 2 * a.stride(0), sam = 2 * a.stride(1), sak = 2 * a.stride(2);
  const int64_t sef = 2 * e.stride(0), set = 2 * e.stride(1);
  const int64_t swt = w.stride(0), swk = w.stride(1);
  const int64_t sof = 2 * out.stride(0), som = 2 * out.stride(1);
  const float* pa = reinterpret_cast<const float*>(a.const_data_ptr());
  const float* pe = reinterpret_cast<const float*>(e.const_data_ptr());
  const float* pw = w.const_data_ptr<float>();
  float* po = reinterpret_cast<float*>(out.data_ptr());
  const int64_t panels = (N + NC - 1) / NC;
  const v16i lo_idx = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
  const v16i hi_idx = {8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15};
  // Frequencies fastest: a thread's consecutive tasks share the panel's columns of w (T x K x NC
  // floats), which then stay in cache while the frequencies' phases change.
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    std::vector<v16> phases(static_cast<size_t>(T));  // e[f, u] as (re, im, re, im, ...)
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t % F, n0 = (t / F) * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      const float* ef = pe + f * sef;
      float* dst = pack.data();
      if (nc == NC) {
        for (int64_t u = 0; u < T; ++u)
          for (int q = 0; q < 16; q += 2) {
            phases[u][q] = ef[u * set];
            phases[u][q + 1] = ef[u * set + 1];
          }
        for (int64_t k = 0; k < K; ++k) {
          // NC real columns of w (NV / 2 vectors) become NC complex ones (NV vectors).
          v16 acc[NV];
          for (int j = 0; j < NV; ++j) acc[j] = splat(0.f);
          for (int64_t u = 0; u < T; ++u) {
            const v16 phase = phases[u];
            const float* wr = pw + u * swt + k * swk + n0;
#pragma GCC unroll 4
            for (int j = 0; j < NV / 2; ++j) {
              const v16 wv = load(wr + 16 * j);
              acc[2 * j] += __builtin_shuffle(wv, lo_idx) * phase;
              acc[2 * j + 1] += __builtin_shuffle(wv, hi_idx) * phase;
            }
          }
          for (int j = 0; j < NV; ++j) store(dst + k * 2 * NC + 16 * j, acc[j]);
        }
      } else {  // the last, partial panel: zeros beyond its columns
        std::fill(pack.begin(), pack.end(), 0.f);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t u = 0; u < T; ++u) {
            const float er = ef[u * set], ei = ef[u * set + 1];
            const float* wr = pw + u * swt + k * swk + n0;
            for (int q = 0; q < nc; ++q) {
              dst[k * 2 * NC + 2 * q] += er * wr[q];
              dst[k * 2 * NC + 2 * q + 1] += ei * wr[q];
            }
          }
      }
      const float* af = pa + f * saf;
      float* cf = po + f * sof + n0 * 2;
      rows_times_panel(af, sam, sak, M, dst, K, cf, som, nc, accumulate);
    }
  });
}

// out[t] = Re(sum_f e[f, t] * (a[f] @ b[f])): a [F, M, K] complex64 (any strides), b [F, K, N]
// complex64 with unit stride along N, e [F, T] complex64, out [T, M, N] float32 contiguous. This
// is the filter gradient's band contraction folded into the filter's T taps as it goes (e: the
// adjoint's phases), so the band of the gradient [F, M, N] is never written out. A task owns one
// panel of NC columns for every row, tap and frequency, so no two tasks write the same output.
void cgemm_fold(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& e,
                torch::Tensor& out) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && e.dim() == 2 && out.dim() == 3,
              "cgemm_fold: a [F, M, K], b [F, K, N], e [F, T], out [T, M, N] expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && b.scalar_type() == at::kComplexFloat &&
                  e.scalar_type() == at::kComplexFloat && out.scalar_type() == at::kFloat,
              "cgemm_fold: complex64 a, b and e, float32 out expected");
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && e.device().is_cpu() && out.device().is_cpu(),
              "cgemm_fold: CPU only");
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2), T = e.size(1);
  TORCH_CHECK(b.size(0) == F && b.size(1) == K && e.size(0) == F && out.size(0) == T &&
                  out.size(1) == M && out.size(2) == N,
              "cgemm_fold: shapes do not match");
  TORCH_CHECK(out.is_contiguous() && (b.stride(2) == 1 || N <= 1), "cgemm_fold: contiguous out and unit stride of b along N expected");
  out.zero_();
  if (F == 0 || M == 0 || N == 0 || K == 0 || T == 0) return;
  const int64_t saf = 2 * a.stride(0), sam = 2 * a.stride(1), sak = 2 * a.stride(2);
  const int64_t sbf = 2 * b.stride(0), sbk = 2 * b.stride(1);
  const int64_t sef = 2 * e.stride(0), set = 2 * e.stride(1);
  const float* pa = reinterpret_cast<const float*>(a.const_data_ptr());
  const float* pb = reinterpret_cast<const float*>(b.const_data_ptr());
  const float* pe = reinterpret_cast<const float*>(e.const_data_ptr());
  float* po = out.data_ptr<float>();
  const int64_t panels = (N + NC - 1) / NC;
  const v16i even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const v16i odd = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  at::parallel_for(0, panels, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    std::vector<float> tile(static_cast<size_t>(M) * 2 * NC);  // a[f] @ b[f] for this panel
    for (int64_t p = lo; p < hi; ++p) {
      const int64_t n0 = p * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      for (int64_t f = 0; f < F; ++f) {
        const float* bp = pb + f * sbf + n0 * 2;
        for (int64_t k = 0; k < K; ++k) {
          std::memcpy(pack.data() + k * 2 * NC, bp + k * sbk, sizeof(float) * 2 * nc);
          if (nc < NC) std::memset(pack.data() + k * 2 * NC + 2 * nc, 0, sizeof(float) * 2 * (NC - nc));
        }
        const float* af = pa + f * saf;
        rows_times_panel(af, sam, sak, M, pack.data(), K, tile.data(), 2 * NC, NC, false);
        // Each row of the tile deinterleaved in place (re | im per 16 columns), then
        // out[u, m, n0:n0+nc] += re(e[f, u]) * re(tile) - im(e[f, u]) * im(tile), tap by tap.
        for (int64_t r = 0; r < M; ++r) {
          float* tr = tile.data() + r * 2 * NC;
          for (int j = 0; j < NV / 2; ++j) {
            const v16 x0 = load(tr + 32 * j), x1 = load(tr + 32 * j + 16);
            store(tr + 32 * j, __builtin_shuffle(x0, x1, even));
            store(tr + 32 * j + 16, __builtin_shuffle(x0, x1, odd));
          }
        }
        const float* ef = pe + f * sef;
        for (int64_t u = 0; u < T; ++u) {
          const v16 er = splat(ef[u * set]), ei = splat(ef[u * set + 1]);
          float* __restrict__ base = po + u * M * N + n0;
          const float* __restrict__ tb = tile.data();
          if (nc == NC) {
            for (int64_t r = 0; r < M; ++r) {
#pragma GCC unroll 2
              for (int j = 0; j < NV / 2; ++j) {
                const float* tr = tb + r * 2 * NC + 32 * j;
                float* dst = base + r * N + 16 * j;
                store(dst, load(dst) + load(tr) * er - load(tr + 16) * ei);
              }
            }
          } else {  // the last, partial panel
            for (int64_t r = 0; r < M; ++r)
              for (int q = 0; q < nc; ++q) {
                const float* tr = tb + r * 2 * NC + 32 * (q / 16);
                base[r * N + q] += tr[q % 16] * er[0] - tr[16 + q % 16] * ei[0];
              }
          }
        }
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cgemm_fold", &cgemm_fold,
        "out[t] = Re(sum_f e[f, t] (a[f] @ b[f])) for complex64 a, b, e and float32 out (CPU)");
  m.def("cgemm", &cgemm, "out[f] (+)= a[f] @ b[f] for complex64 (b also float32) CPU tensors");
  m.def("cgemm_taps", &cgemm_taps,
        "out[f] (+)= a[f] @ (sum_t e[f, t] w[t]) for complex64 a, e, out and float32 w (CPU)");
}
