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
          int64_t m = 0;
          for (; m + MR <= M; m += MR)
            micro<MR>(af + m * sam, sam, sak, dst, K, cf + m * som, som, nc, accumulate);
          if (m < M) kTail[M - m](af + m * sam, sam, sak, dst, K, cf + m * som, som, nc, accumulate);
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
      int64_t m = 0;
      for (; m + MR <= M; m += MR)
        micro<MR>(af + m * sam, sam, sak, dst, K, cf + m * som, som, nc, accumulate);
      if (m < M) kTail[M - m](af + m * sam, sam, sak, dst, K, cf + m * som, som, nc, accumulate);
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cgemm", &cgemm, "out[f] (+)= a[f] @ b[f] for complex64 (b also float32) CPU tensors");
}
