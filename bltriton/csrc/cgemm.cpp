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
#include <initializer_list>
#include <type_traits>
#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));

constexpr int NV = 2;          // vectors per panel
constexpr int NC = 8 * NV;     // complex columns per panel
constexpr int MR = 6;          // output rows per micro-kernel call
static_assert(NV == 2, "cgemm_taps and cgemm_fold form and fold one vector of 16 real columns per panel");

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

// The real-operand micro-kernels work on panels of NR real columns (NR / 16 vectors).
constexpr int NR = 32;
constexpr int NRV = NR / 16;

// R rows of complex a times the packed real panel p [K, NR] into R rows of complex c: the
// complex-times-real product, two multiply-adds per real column instead of the four of a
// complex product with zero imaginary parts. acc_r / acc_i hold the real / imaginary parts of
// NR columns; they are interleaved into complex numbers once, when stored.
template <int R>
void micro_rb(const float* a, int64_t sam, int64_t sak, const float* p, int64_t K, float* c,
              int64_t ldc, int ncols, bool accumulate) {
  v16 acc_r[R][NRV], acc_i[R][NRV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NRV; ++j) acc_r[r][j] = acc_i[r][j] = splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    v16 bv[NRV];
#pragma GCC unroll 4
    for (int j = 0; j < NRV; ++j) bv[j] = load(p + k * NR + 16 * j);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float* ar = a + r * sam + k * sak;
      const v16 re = splat(ar[0]), im = splat(ar[1]);
#pragma GCC unroll 4
      for (int j = 0; j < NRV; ++j) {
        acc_r[r][j] += re * bv[j];
        acc_i[r][j] += im * bv[j];
      }
    }
  }
  const v16i lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const v16i hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    float t[2 * NR];
    float* dst = ncols == NR && !accumulate ? cr : t;
    for (int j = 0; j < NRV; ++j) {
      store(dst + 32 * j, __builtin_shuffle(acc_r[r][j], acc_i[r][j], lo));
      store(dst + 32 * j + 16, __builtin_shuffle(acc_r[r][j], acc_i[r][j], hi));
    }
    if (dst == t) {
      if (accumulate) {
        for (int q = 0; q < 2 * ncols; ++q) cr[q] += t[q];
      } else {
        std::memcpy(cr, t, sizeof(float) * 2 * ncols);
      }
    }
  }
}

// R rows of complex a times the packed complex panel p [K, 2 * NR] (per k: NR real parts, then
// NR negated imaginary parts) into R rows of real c: Re(a @ b), the inverse transforms' product,
// two multiply-adds per real output instead of the four of a complex product.
template <int R>
void micro_re(const float* a, int64_t sam, int64_t sak, const float* p, int64_t K, float* c,
              int64_t ldc, int ncols, bool accumulate) {
  v16 acc[R][NRV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NRV; ++j) acc[r][j] = splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    v16 br[NRV], bi[NRV];
#pragma GCC unroll 4
    for (int j = 0; j < NRV; ++j) {
      br[j] = load(p + k * 2 * NR + 16 * j);
      bi[j] = load(p + k * 2 * NR + NR + 16 * j);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float* ar = a + r * sam + k * sak;
      const v16 re = splat(ar[0]), im = splat(ar[1]);
#pragma GCC unroll 4
      for (int j = 0; j < NRV; ++j) {
        acc[r][j] += re * br[j];  // two multiply-adds, not a product, a multiply-add and an add
        acc[r][j] += im * bi[j];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (ncols == NR) {
#pragma GCC unroll 4
      for (int j = 0; j < NRV; ++j)
        store(cr + 16 * j, accumulate ? acc[r][j] + load(cr + 16 * j) : acc[r][j]);
    } else {
      float t[NR];
      for (int j = 0; j < NRV; ++j) store(t + 16 * j, acc[r][j]);
      for (int q = 0; q < ncols; ++q) cr[q] = accumulate ? cr[q] + t[q] : t[q];
    }
  }
}

constexpr Micro kTailRB[8] = {nullptr, micro_rb<1>, micro_rb<2>, micro_rb<3>,
                              micro_rb<4>, micro_rb<5>, micro_rb<6>, micro_rb<7>};
constexpr int MR_RE = 8;  // Re(a @ b) keeps R x NRV accumulators: 8 rows fill 16 registers
constexpr Micro kTailRE[8] = {nullptr, micro_re<1>, micro_re<2>, micro_re<3>,
                              micro_re<4>, micro_re<5>, micro_re<6>, micro_re<7>};

// Rows m0 <= m < m1 of a times a packed real-operand panel, MR (MR_RE) rows per call, then the tail.
template <bool kRealOut>
inline void rows_times_real_panel(const float* a, int64_t sam, int64_t sak, int64_t M, const float* p,
                                  int64_t K, float* c, int64_t ldc, int ncols, bool accumulate) {
  constexpr int rows = kRealOut ? MR_RE : MR;
  int64_t m = 0;
  for (; m + rows <= M; m += rows) {
    if (kRealOut)
      micro_re<MR_RE>(a + m * sam, sam, sak, p, K, c + m * ldc, ldc, ncols, accumulate);
    else
      micro_rb<MR>(a + m * sam, sam, sak, p, K, c + m * ldc, ldc, ncols, accumulate);
  }
  if (m < M)
    (kRealOut ? kTailRE : kTailRB)[M - m](a + m * sam, sam, sak, p, K, c + m * ldc, ldc, ncols, accumulate);
}

// Rows per task of the real-operand products: a task packs one panel of b and multiplies this many
// rows of a by it (the pack, K x NR numbers, is then a small part of the task's work).
constexpr int64_t ROW_BLOCK = 96;

typedef long long v8l __attribute__((vector_size(64)));

// x[i][j] -> x[j][i] for an 8 x 8 block of 64-bit elements (complex64 numbers): three stages, the
// s-th swapping bit s of the row index with bit s of the column index.
inline void transpose8(v8l x[8]) {
  for (int i = 0; i < 8; i += 2) {
    const v8l a = x[i], b = x[i + 1];
    x[i] = __builtin_shuffle(a, b, v8l{0, 8, 2, 10, 4, 12, 6, 14});
    x[i + 1] = __builtin_shuffle(a, b, v8l{1, 9, 3, 11, 5, 13, 7, 15});
  }
  for (int i : {0, 1, 4, 5}) {
    const v8l a = x[i], b = x[i + 2];
    x[i] = __builtin_shuffle(a, b, v8l{0, 1, 8, 9, 4, 5, 12, 13});
    x[i + 2] = __builtin_shuffle(a, b, v8l{2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int i = 0; i < 4; ++i) {
    const v8l a = x[i], b = x[i + 4];
    x[i] = __builtin_shuffle(a, b, v8l{0, 1, 2, 3, 8, 9, 10, 11});
    x[i + 4] = __builtin_shuffle(a, b, v8l{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// The transposed complex-times-real product: R rows n of the real matrix bt (row stride sbn,
// unit stride along k; bt = b^T, e.g. a signal as it lies, one row per channel) times the packed
// complex panel p [K, 2 * NC] (p[k] holds a[m0 .. m0 + NC, k]) gives out[m0 + q, n + r], stored
// into c (c = &out[m0, n], row stride som floats, unit stride along n) for the panel's ncols rows
// q. V: vectors of the panel used (1 for a panel of at most 8 columns). For R = 8 the R x 8
// complex blocks are transposed in registers and stored as whole rows.
template <int R, int V>
void micro_tr(const float* bt, int64_t sbn, const float* p, int64_t K, float* c, int64_t som,
              int ncols, bool accumulate) {
  v16 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < V; ++j) acc[r][j] = splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    v16 pv[V];
#pragma GCC unroll 2
    for (int j = 0; j < V; ++j) pv[j] = load(p + k * 2 * NC + 16 * j);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const v16 x = splat(bt[r * sbn + k]);
#pragma GCC unroll 2
      for (int j = 0; j < V; ++j) acc[r][j] += x * pv[j];
    }
  }
  if constexpr (R == 8) {
    for (int j = 0; j < V; ++j) {
      v8l blk[8];
      for (int r = 0; r < 8; ++r) std::memcpy(&blk[r], &acc[r][j], sizeof(v8l));
      transpose8(blk);  // blk[q] = out[m0 + 8j + q, n .. n + 8]
      const int rows = std::min(8, ncols - 8 * j);
      for (int q = 0; q < rows; ++q) {
        float* dst = c + (8 * j + q) * som;
        v16 y;
        std::memcpy(&y, &blk[q], sizeof(y));
        store(dst, accumulate ? y + load(dst) : y);
      }
    }
  } else {
    float t[R][16 * V];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) store(t[r] + 16 * j, acc[r][j]);
    for (int q = 0; q < ncols; ++q)
      for (int r = 0; r < R; ++r) {
        float* dst = c + q * som + 2 * r;
        dst[0] = accumulate ? dst[0] + t[r][2 * q] : t[r][2 * q];
        dst[1] = accumulate ? dst[1] + t[r][2 * q + 1] : t[r][2 * q + 1];
      }
  }
}

using MicroTr = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int, bool);
constexpr MicroTr kTr[2][9] = {
    {nullptr, micro_tr<1, 1>, micro_tr<2, 1>, micro_tr<3, 1>, micro_tr<4, 1>, micro_tr<5, 1>,
     micro_tr<6, 1>, micro_tr<7, 1>, micro_tr<8, 1>},
    {nullptr, micro_tr<1, 2>, micro_tr<2, 2>, micro_tr<3, 2>, micro_tr<4, 2>, micro_tr<5, 2>,
     micro_tr<6, 2>, micro_tr<7, 2>, micro_tr<8, 2>}};

// Columns per task of the transposed product (a multiple of 8).
constexpr int64_t COL_BLOCK = 64;

// out[f] (+)= a[f] @ b[f] for a complex a [F, M, K] (any strides) and a real b [F, K, N] with unit
// stride along K (b^T row-major: a signal read as it lies), out complex with unit stride along
// N. Computed as out^T = b^T a^T: rows of b^T are broadcast (no pack of the large operand), a's
// panels are packed once for all tasks, and the micro-kernel stores out's rows directly. This is
// the forward transforms' product (a: the DFT operand [F, P], b: the signal [P, B*C]) writing the
// frequency-major band without a transposing copy.
void real_b_transposed(const float* pa, int64_t saf, int64_t sam, int64_t sak, const float* pb,
                       int64_t sbf, int64_t sbn, float* po, int64_t sof, int64_t som, int64_t F,
                       int64_t M, int64_t K, int64_t N, bool accumulate) {
  const int64_t panels = (M + NC - 1) / NC, width = K * 2 * NC;
  std::vector<float> packs(static_cast<size_t>(F * panels * width), 0.f);
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t / panels, m0 = (t % panels) * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, M - m0));
      float* dst = packs.data() + t * width;
      for (int q = 0; q < nc; ++q) {
        const float* src = pa + f * saf + (m0 + q) * sam;
        for (int64_t k = 0; k < K; ++k) {
          dst[k * 2 * NC + 2 * q] = src[k * sak];
          dst[k * 2 * NC + 2 * q + 1] = src[k * sak + 1];
        }
      }
    }
  });
  const int64_t blocks = (N + COL_BLOCK - 1) / COL_BLOCK;
  at::parallel_for(0, F * blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t / blocks, n_end = std::min(N, (t % blocks + 1) * COL_BLOCK);
      for (int64_t n = (t % blocks) * COL_BLOCK; n < n_end; n += 8) {
        const int r = static_cast<int>(std::min<int64_t>(8, n_end - n));
        const float* bt = pb + f * sbf + n * sbn;
        for (int64_t q = 0; q < panels; ++q) {
          const int nc = static_cast<int>(std::min<int64_t>(NC, M - q * NC));
          kTr[nc > 8][r](bt, sbn, packs.data() + (f * panels + q) * width, K,
                         po + f * sof + q * NC * som + 2 * n, som, nc, accumulate);
        }
      }
    }
  });
}

// out[f] (+)= a[f] @ b[f] for a real b with any strides (packed panel by panel), out complex.
void real_b_packed(const float* pa, int64_t saf, int64_t sam, int64_t sak, const float* pb,
                   int64_t sbf, int64_t sbk, int64_t sbn, float* po, int64_t sof, int64_t som,
                   int64_t F, int64_t M, int64_t K, int64_t N, bool accumulate) {
  const int64_t panels = (N + NR - 1) / NR, blocks = (M + ROW_BLOCK - 1) / ROW_BLOCK;
  at::parallel_for(0, F * panels * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * NR);
    int64_t packed = -1;  // the (f, panel) the pack holds
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t block = t % blocks, fp = t / blocks, f = fp / panels, n0 = (fp % panels) * NR;
      const int nc = static_cast<int>(std::min<int64_t>(NR, N - n0));
      if (fp != packed) {
        packed = fp;
        const float* bp = pb + f * sbf + n0 * sbn;
        float* dst = pack.data();
        if (nc < NR) std::fill(pack.begin(), pack.end(), 0.f);
        if (sbn == 1) {  // columns contiguous: one run per k
          for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * NR, bp + k * sbk, sizeof(float) * nc);
        } else {
          for (int q = 0; q < nc; ++q)
            for (int64_t k = 0; k < K; ++k) dst[k * NR + q] = bp[k * sbk + q * sbn];
        }
      }
      const int64_t m0 = block * ROW_BLOCK, rows = std::min<int64_t>(ROW_BLOCK, M - m0);
      rows_times_real_panel<false>(pa + f * saf + m0 * sam, sam, sak, rows, pack.data(), K,
                                   po + f * sof + m0 * som + n0 * 2, som, nc, accumulate);
    }
  });
}

// out[f] (+)= Re(a[f] @ b[f]) for complex a [F, M, K] and b [F, K, N] (any strides), real out
// with unit stride along N: the inverse transforms (a: the band read in place, b: the inverse
// DFT operand). b's panels (real parts, then negated imaginary parts) are packed once for all
// tasks; a task copies its block of ROW_BLOCK rows of a k-major (so that a band read across its
// frequency stride, often a power of two, does not thrash one cache set) and runs every panel.
void re_gemm(const float* pa, int64_t saf, int64_t sam, int64_t sak, const float* pb, int64_t sbf,
             int64_t sbk, int64_t sbn, float* po, int64_t sof, int64_t som, int64_t F, int64_t M,
             int64_t K, int64_t N, bool accumulate) {
  const int64_t panels = (N + NR - 1) / NR, width = K * 2 * NR;
  std::vector<float> packs(static_cast<size_t>(F * panels * width), 0.f);
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t / panels, n0 = (t % panels) * NR;
      const int nc = static_cast<int>(std::min<int64_t>(NR, N - n0));
      const float* bp = pb + f * sbf + n0 * sbn;
      float* dst = packs.data() + t * width;
      for (int64_t k = 0; k < K; ++k)
        for (int q = 0; q < nc; ++q) {
          dst[k * 2 * NR + q] = bp[k * sbk + q * sbn];
          dst[k * 2 * NR + NR + q] = -bp[k * sbk + q * sbn + 1];
        }
    }
  });
  const int64_t blocks = (M + ROW_BLOCK - 1) / ROW_BLOCK;
  at::parallel_for(0, F * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> rows_k(static_cast<size_t>(K) * 2 * ROW_BLOCK);  // [K, ROW_BLOCK] complex
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t / blocks, m0 = (t % blocks) * ROW_BLOCK;
      const int64_t rows = std::min<int64_t>(ROW_BLOCK, M - m0);
      const float* af = pa + f * saf + m0 * sam;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t r = 0; r < rows; ++r) {
          rows_k[(k * ROW_BLOCK + r) * 2] = af[r * sam + k * sak];
          rows_k[(k * ROW_BLOCK + r) * 2 + 1] = af[r * sam + k * sak + 1];
        }
      for (int64_t q = 0; q < panels; ++q) {
        const int nc = static_cast<int>(std::min<int64_t>(NR, N - q * NR));
        rows_times_real_panel<true>(rows_k.data(), 2, 2 * ROW_BLOCK, rows,
                                    packs.data() + (f * panels + q) * width, K,
                                    po + f * sof + m0 * som + q * NR, som, nc, accumulate);
      }
    }
  });
}

// Every operand on the CPU, or an error naming the entry point.
inline void check_cpu(const char* name, std::initializer_list<const torch::Tensor*> ts) {
  for (const torch::Tensor* t : ts) TORCH_CHECK(t->device().is_cpu(), name, ": CPU only");
}

}  // namespace

// a [F, M, K] complex64, b [F, K, N] complex64 or float32 (a real b, e.g. a filter or a signal to
// transform, takes the complex-times-real micro-kernel), any strides; out [F, M, N] complex64
// with unit stride along N (any batch and row strides).
void cgemm(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out, bool accumulate) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3, "cgemm: 3-D operands expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat &&
                  (b.scalar_type() == at::kComplexFloat || b.scalar_type() == at::kFloat) &&
                  out.scalar_type() == at::kComplexFloat,
              "cgemm: complex64 a and out, complex64 or float32 b expected");
  const bool real_b = b.scalar_type() == at::kFloat;
  check_cpu("cgemm", {&a, &b, &out});
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
  if (real_b) {
    if (sbk == 1 && K > 1)
      real_b_transposed(pa, saf, sam, sak, pb, sbf, sbn, po, sof, som, F, M, K, N, accumulate);
    else
      real_b_packed(pa, saf, sam, sak, pb, sbf, sbk, sbn, po, sof, som, F, M, K, N, accumulate);
    return;
  }
  const int64_t panels = (N + NC - 1) / NC;
  if (sbn > 2 && sbf == 2 && F > 1 && K <= 64) {
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
  const bool batch_fastest = sbn > 2 && sbf == 2 && F > 1;
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = batch_fastest ? t % F : t / panels;
      const int64_t n0 = (batch_fastest ? t / F : t % panels) * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      const float* bp = pb + f * sbf + n0 * sbn;
      float* dst = pack.data();
      if (sbn == 2) {  // columns contiguous: one run per k
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
// complex64, w [T, K, N] float32 (any strides: the filter may be read as it lies), out [F, M, N]
// complex64 with unit stride along N. This is a band contraction against a filter band that is
// never written out: the filter band of frequency f, sum_t e[f, t] w[t] (e: the DFT phases at the
// filter's T taps, w: the real filter viewed tap-major), is formed panel by panel while packing
// (2T real multiply-adds per packed complex number, reading w from cache), instead of a filter
// transform that writes F x K x N complex numbers to memory for the contraction to read back.
void cgemm_taps(const torch::Tensor& a, const torch::Tensor& e, const torch::Tensor& w,
                torch::Tensor& out, bool accumulate) {
  TORCH_CHECK(a.dim() == 3 && e.dim() == 2 && w.dim() == 3 && out.dim() == 3,
              "cgemm_taps: a [F, M, K], e [F, T], w [T, K, N], out [F, M, N] expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && e.scalar_type() == at::kComplexFloat &&
                  w.scalar_type() == at::kFloat && out.scalar_type() == at::kComplexFloat,
              "cgemm_taps: complex64 a, e and out, float32 w expected");
  check_cpu("cgemm_taps", {&a, &e, &w, &out});
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), T = e.size(1), N = w.size(2);
  TORCH_CHECK(e.size(0) == F && w.size(0) == T && w.size(1) == K && out.size(0) == F &&
                  out.size(1) == M && out.size(2) == N,
              "cgemm_taps: shapes do not match");
  TORCH_CHECK(out.stride(2) == 1 || N <= 1, "cgemm_taps: out needs unit stride along its last dimension");
  if (F == 0 || M == 0 || N == 0) return;
  if (K == 0 || T == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  const int64_t saf = 2 * a.stride(0), sam = 2 * a.stride(1), sak = 2 * a.stride(2);
  const int64_t sef = 2 * e.stride(0), set = 2 * e.stride(1);
  const int64_t swt = w.stride(0), swk = w.stride(1), swn = w.stride(2);
  const bool gather = swn != 1 && N > 1;  // e.g. the filter read as it lies, [O, Cg, taps]
  const int64_t sof = 2 * out.stride(0), som = 2 * out.stride(1);
  const float* pa = reinterpret_cast<const float*>(a.const_data_ptr());
  const float* pe = reinterpret_cast<const float*>(e.const_data_ptr());
  const float* pw = w.const_data_ptr<float>();
  float* po = reinterpret_cast<float*>(out.data_ptr());
  const int64_t panels = (N + NC - 1) / NC;
  // (re, im) pairs of columns 0-7 and 8-15 from a vector of real parts and one of imaginary parts
  const v16i lo_idx = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const v16i hi_idx = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  // Frequencies fastest: a thread's consecutive tasks share the panel's columns of w (T x K x NC
  // floats), which then stay in cache while the frequencies' phases change.
  at::parallel_for(0, F * panels, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    // A w whose columns are not adjacent is gathered panel by panel into wpanel [T, K, NC] (the
    // filter as it lies needs no tap-major copy): once per panel, for the F tasks that share it.
    std::vector<float> wpanel(gather ? static_cast<size_t>(T) * K * NC : 0);
    int64_t gathered = -1;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t f = t % F, n0 = (t / F) * NC;
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      const float* ef = pe + f * sef;
      const float* wb = pw + n0;  // w[u, k, n0 + q] at wb[u * wst + k * wsk + q]
      int64_t wst = swt, wsk = swk;
      if (gather) {
        if (gathered != n0) {
          gathered = n0;
          if (nc < NC) std::fill(wpanel.begin(), wpanel.end(), 0.f);
          for (int64_t k = 0; k < K; ++k)
            for (int q = 0; q < nc; ++q)
              for (int64_t u = 0; u < T; ++u)
                wpanel[(u * K + k) * NC + q] = pw[u * swt + k * swk + (n0 + q) * swn];
        }
        wb = wpanel.data(), wst = K * NC, wsk = NC;
      }
      float* dst = pack.data();
      if (nc == NC) {
        // Real and imaginary parts of KB rows of the panel at once (2 * KB independent sums over
        // the taps: one row alone waits on the multiply-add latency at every tap), one
        // multiply-add per tap and vector each; interleaved into complex numbers once per row.
        constexpr int KB = 4;
        int64_t k = 0;
        for (; k + KB <= K; k += KB) {
          v16 re[KB], im[KB];
#pragma GCC unroll 4
          for (int i = 0; i < KB; ++i) re[i] = im[i] = splat(0.f);
          for (int64_t u = 0; u < T; ++u) {
            const v16 er = splat(ef[u * set]), ei = splat(ef[u * set + 1]);
            const float* wr = wb + u * wst + k * wsk;
#pragma GCC unroll 4
            for (int i = 0; i < KB; ++i) {
              const v16 wv = load(wr + i * wsk);
              re[i] += er * wv;
              im[i] += ei * wv;
            }
          }
#pragma GCC unroll 4
          for (int i = 0; i < KB; ++i) {
            store(dst + (k + i) * 2 * NC, __builtin_shuffle(re[i], im[i], lo_idx));
            store(dst + (k + i) * 2 * NC + 16, __builtin_shuffle(re[i], im[i], hi_idx));
          }
        }
        for (; k < K; ++k) {
          v16 re = splat(0.f), im = splat(0.f);
          for (int64_t u = 0; u < T; ++u) {
            const v16 wv = load(wb + u * wst + k * wsk);
            re += splat(ef[u * set]) * wv;
            im += splat(ef[u * set + 1]) * wv;
          }
          store(dst + k * 2 * NC, __builtin_shuffle(re, im, lo_idx));
          store(dst + k * 2 * NC + 16, __builtin_shuffle(re, im, hi_idx));
        }
      } else {  // the last, partial panel: zeros beyond its columns
        std::fill(pack.begin(), pack.end(), 0.f);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t u = 0; u < T; ++u) {
            const float er = ef[u * set], ei = ef[u * set + 1];
            const float* wr = wb + u * wst + k * wsk;
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
// complex64 with unit stride along N, e [F, T] complex64, out [T, M, N] float32 (any strides). This
// is the filter gradient's band contraction folded into the filter's T taps as it goes (e: the
// adjoint's phases), so the band of the gradient [F, M, N] is never written out. A task owns a
// block of rows of one panel of NC columns, for every tap and frequency, so no two tasks write
// the same output.
void cgemm_fold(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& e,
                torch::Tensor& out) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && e.dim() == 2 && out.dim() == 3,
              "cgemm_fold: a [F, M, K], b [F, K, N], e [F, T], out [T, M, N] expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && b.scalar_type() == at::kComplexFloat &&
                  e.scalar_type() == at::kComplexFloat && out.scalar_type() == at::kFloat,
              "cgemm_fold: complex64 a, b and e, float32 out expected");
  check_cpu("cgemm_fold", {&a, &b, &e, &out});
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2), T = e.size(1);
  TORCH_CHECK(b.size(0) == F && b.size(1) == K && e.size(0) == F && out.size(0) == T &&
                  out.size(1) == M && out.size(2) == N,
              "cgemm_fold: shapes do not match");
  TORCH_CHECK(b.stride(2) == 1 || N <= 1, "cgemm_fold: b needs unit stride along N");
  if (F == 0 || M == 0 || N == 0 || K == 0 || T == 0) {
    out.zero_();
    return;
  }
  const int64_t saf = 2 * a.stride(0), sam = 2 * a.stride(1), sak = 2 * a.stride(2);
  const int64_t sbf = 2 * b.stride(0), sbk = 2 * b.stride(1);
  const int64_t sef = 2 * e.stride(0), set = 2 * e.stride(1);
  const float* pa = reinterpret_cast<const float*>(a.const_data_ptr());
  const float* pb = reinterpret_cast<const float*>(b.const_data_ptr());
  const float* pe = reinterpret_cast<const float*>(e.const_data_ptr());
  float* po = out.data_ptr<float>();
  const int64_t sot = out.stride(0), som = out.stride(1), son = out.stride(2);
  const int64_t panels = (N + NC - 1) / NC;
  const v16i even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const v16i odd = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  // A task owns RB rows of one panel of NC columns: their T taps (T x RB x NC floats) are summed
  // in a local buffer sized to stay in L1 with the tile, over every frequency, then written once
  // (summing into out's rows in place, N floats apart, ran from L2: 0.13 ms per tap on the FCN's
  // 256 x 128 k5 filter gradient at batch 16).
  const int64_t rb = std::clamp<int64_t>((24576 / (T * NC * 4)) / MR * MR, MR, 16 * MR);
  const int64_t blocks = (M + rb - 1) / rb;
  at::parallel_for(0, panels * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pack(static_cast<size_t>(K) * 2 * NC);
    std::vector<float> tile(static_cast<size_t>(rb) * 2 * NC);  // a[f] @ b[f], this block and panel
    std::vector<float> taps(static_cast<size_t>(T) * rb * NC);  // the block's out[u, m, panel]
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t n0 = (task / blocks) * NC, m0 = (task % blocks) * rb;
      const int64_t rows = std::min<int64_t>(rb, M - m0);
      const int nc = static_cast<int>(std::min<int64_t>(NC, N - n0));
      std::fill(taps.begin(), taps.end(), 0.f);
      for (int64_t f = 0; f < F; ++f) {
        const float* bp = pb + f * sbf + n0 * 2;
        for (int64_t k = 0; k < K; ++k) {
          std::memcpy(pack.data() + k * 2 * NC, bp + k * sbk, sizeof(float) * 2 * nc);
          if (nc < NC) std::memset(pack.data() + k * 2 * NC + 2 * nc, 0, sizeof(float) * 2 * (NC - nc));
        }
        rows_times_panel(pa + f * saf + m0 * sam, sam, sak, rows, pack.data(), K, tile.data(), 2 * NC,
                         NC, false);
        // Each row of the tile deinterleaved (re | im per 16 columns), then
        // taps[u, r] += re(e[f, u]) * re(tile[r]) - im(e[f, u]) * im(tile[r]), tap by tap.
        const float* ef = pe + f * sef;
        for (int64_t r = 0; r < rows; ++r) {
          const float* tr = tile.data() + r * 2 * NC;
          const v16 x0 = load(tr), x1 = load(tr + 16);
          const v16 re = __builtin_shuffle(x0, x1, even), im = __builtin_shuffle(x0, x1, odd);
          float* dst = taps.data() + r * NC;
          for (int64_t u = 0; u < T; ++u) {
            float* d = dst + u * rb * NC;
            store(d, load(d) + re * splat(ef[u * set]) - im * splat(ef[u * set + 1]));
          }
        }
      }
      for (int64_t u = 0; u < T; ++u)
        for (int64_t r = 0; r < rows; ++r) {
          const float* src = taps.data() + (u * rb + r) * NC;
          float* dst = po + u * sot + (m0 + r) * som + n0 * son;
          if (son == 1) {
            std::memcpy(dst, src, sizeof(float) * nc);
          } else {  // e.g. the filter gradient written as it lies, [O, Cg, taps]
            for (int q = 0; q < nc; ++q) dst[q * son] = src[q];
          }
        }
    }
  });
}

// out[f] (+)= Re(a[f] @ b[f]): a [F, M, K] and b [F, K, N] complex64, any strides; out [F, M, N]
// float32 with unit stride along N. The inverse transforms: a band read in place (any layout)
// times the inverse DFT operand, straight into the real signal.
void cgemm_re(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out, bool accumulate) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3, "cgemm_re: 3-D operands expected");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && b.scalar_type() == at::kComplexFloat &&
                  out.scalar_type() == at::kFloat,
              "cgemm_re: complex64 a and b, float32 out expected");
  check_cpu("cgemm_re", {&a, &b, &out});
  TORCH_CHECK(out.stride(2) == 1 || out.size(2) <= 1,
              "cgemm_re: out needs unit stride along its last dimension");
  const int64_t F = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  TORCH_CHECK(b.size(0) == F && b.size(1) == K && out.size(0) == F && out.size(1) == M &&
                  out.size(2) == N,
              "cgemm_re: shapes do not match");
  if (F == 0 || M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  re_gemm(reinterpret_cast<const float*>(a.const_data_ptr()), 2 * a.stride(0),
                          2 * a.stride(1), 2 * a.stride(2),
                          reinterpret_cast<const float*>(b.const_data_ptr()), 2 * b.stride(0),
                          2 * b.stride(1), 2 * b.stride(2), out.data_ptr<float>(), out.stride(0),
                          out.stride(1), F, M, K, N, accumulate);
}

// ---- Separable 2-D transforms, both stages per block of maps -------------------------------
//
// The forward transform of real maps x [M, H, W] to their band [R, cols, M] (frequency-major,
// maps fastest): T[h, c] = sum_w x[h, w] ecol[w, c] (the column stage, complex ecol), then
// band[r, c] = sum_h erow[r, h] T[h, c] (the row stage). The inverse takes the band back to real
// maps y [M, Hout, Wout]: S[h, c] = sum_r drow[h, r] band[r, c], y[h, w] = sum_c re(S[h, c])
// dcol[2c, w] + im(S[h, c]) dcol[2c + 1, w]. Positions, offsets, strides, conjugation and the
// inverse's weights live in the operands. A task takes a block of MB maps; each map's
// intermediate (H x cols complex) stays in L1, where the separate GEMMs wrote and read it
// through memory. The block's band rows are gathered in a buffer and written MB maps at a time.
namespace {

constexpr int MB = 16;  // maps per task

inline v16 neg_re() {  // (-1, +1, -1, +1, ...): swap_re_im(t) * neg_re() = i * t
  v16 s;
  for (int j = 0; j < 16; ++j) s[j] = (j % 2 == 0) ? -1.f : 1.f;
  return s;
}

// HB rows of out = sum_k (er[h, k] z[k] + ei[h, k] zs[k]): z/zs rows of a complex matrix and
// their i-multiples, NVC vectors per row. Separate sums for the real and the imaginary scalar
// (no two dependent multiply-adds per step): 2 * HB * NVC independent sums.
template <int NVC, int HB>
inline void complex_block(const float* er, const float* ei, int64_t ldk, const float* z, const float* zs,
                          int64_t nk, int64_t ld, float* out) {
  v16 acc[HB][NVC], acc2[HB][NVC];
  for (int i = 0; i < HB; ++i)
    for (int v = 0; v < NVC; ++v) acc[i][v] = acc2[i][v] = splat(0.f);
  for (int64_t k = 0; k < nk; ++k) {
    v16 t[NVC], ts[NVC];
    for (int v = 0; v < NVC; ++v) t[v] = load(z + k * ld + 16 * v), ts[v] = load(zs + k * ld + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < HB; ++i) {
      const v16 a = splat(er[i * ldk + k]), b = splat(ei[i * ldk + k]);
      for (int v = 0; v < NVC; ++v) acc[i][v] += a * t[v], acc2[i][v] += b * ts[v];
    }
  }
  for (int i = 0; i < HB; ++i)
    for (int v = 0; v < NVC; ++v) store(out + i * ld + 16 * v, acc[i][v] + acc2[i][v]);
}

// out[h] = sum_k (er[h, k] z[k] + ei[h, k] zs[k]) for h in [0, nh): the row stages. The rows
// left after the full blocks take a block of their own size (a row at a time would wait on the
// multiply-add latency at every step).
template <int NVC>
void complex_rows(const float* er, const float* ei, int64_t ldk, int64_t nh, const float* z,
                  const float* zs, int64_t nk, int64_t ld, float* out) {
  constexpr int HB = NVC == 1 ? 6 : 4;
  int64_t h = 0;
  for (; h + HB <= nh; h += HB)
    complex_block<NVC, HB>(er + h * ldk, ei + h * ldk, ldk, z, zs, nk, ld, out + h * ld);
  const float *r = er + h * ldk, *i = ei + h * ldk;
  switch (nh - h) {
    case 5: return complex_block<NVC, 5>(r, i, ldk, z, zs, nk, ld, out + h * ld);
    case 4: return complex_block<NVC, 4>(r, i, ldk, z, zs, nk, ld, out + h * ld);
    case 3: return complex_block<NVC, 3>(r, i, ldk, z, zs, nk, ld, out + h * ld);
    case 2: return complex_block<NVC, 2>(r, i, ldk, z, zs, nk, ld, out + h * ld);
    case 1: return complex_block<NVC, 1>(r, i, ldk, z, zs, nk, ld, out + h * ld);
    default: return;
  }
}

// HB rows of out = sum_k s[h, k] d[k]: real scalars times real vector rows d [nk, NWV * 16].
template <int NWV, int HB>
inline void real_block(const float* s, int64_t lds, const float* d, int64_t nk, float* out, int64_t ldo) {
  v16 acc[HB][NWV];
  for (int i = 0; i < HB; ++i)
    for (int v = 0; v < NWV; ++v) acc[i][v] = splat(0.f);
  for (int64_t k = 0; k < nk; ++k) {
    v16 dv[NWV];
    for (int v = 0; v < NWV; ++v) dv[v] = load(d + k * NWV * 16 + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < HB; ++i) {
      const v16 a = splat(s[i * lds + k]);
      for (int v = 0; v < NWV; ++v) acc[i][v] += a * dv[v];
    }
  }
  for (int i = 0; i < HB; ++i)
    for (int v = 0; v < NWV; ++v) store(out + i * ldo + 16 * v, acc[i][v]);
}

// out[h] = sum_k s[h, k] d[k] for h in [0, nh) (row stride lds): the column stages (forward:
// s = x, d = ecol; inverse: s = S, d = dcol). Leftover rows as in complex_rows.
template <int NWV>
void real_rows(const float* s, int64_t lds, int64_t nh, const float* d, int64_t nk, float* out,
               int64_t ldo) {
  constexpr int HB = NWV == 1 ? 8 : NWV == 2 ? 6 : 4;  // HB * NWV independent sums
  int64_t h = 0;
  for (; h + HB <= nh; h += HB) real_block<NWV, HB>(s + h * lds, lds, d, nk, out + h * ldo, ldo);
  const float* sh = s + h * lds;
  float* oh = out + h * ldo;
  switch (nh - h) {
    case 7: return real_block<NWV, 7>(sh, lds, d, nk, oh, ldo);
    case 6: return real_block<NWV, 6>(sh, lds, d, nk, oh, ldo);
    case 5: return real_block<NWV, 5>(sh, lds, d, nk, oh, ldo);
    case 4: return real_block<NWV, 4>(sh, lds, d, nk, oh, ldo);
    case 3: return real_block<NWV, 3>(sh, lds, d, nk, oh, ldo);
    case 2: return real_block<NWV, 2>(sh, lds, d, nk, oh, ldo);
    case 1: return real_block<NWV, 1>(sh, lds, d, nk, oh, ldo);
    default: return;
  }
}

// i * each complex number of rows [n, ld floats] (ld a multiple of 16), into out.
inline void times_i(const float* z, int64_t n, int64_t ld, float* out) {
  const v16 s = neg_re();
  for (int64_t j = 0; j < n * ld; j += 16) store(out + j, swap_re_im(load(z + j)) * s);
}

// The complex operand [nh, nk] as separate real and imaginary planes (row stride nk).
void split_complex(const torch::Tensor& e, std::vector<float>& re, std::vector<float>& im) {
  const int64_t n0 = e.size(0), n1 = e.size(1);
  re.resize(n0 * n1), im.resize(n0 * n1);
  const float* p = reinterpret_cast<const float*>(e.const_data_ptr());
  const int64_t s0 = 2 * e.stride(0), s1 = 2 * e.stride(1);
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j) re[i * n1 + j] = p[i * s0 + j * s1], im[i * n1 + j] = p[i * s0 + j * s1 + 1];
}

template <int NVC>
void sep2_fwd_impl(const float* px, int64_t sxm, int64_t sxh, int64_t M, int64_t H, int64_t W,
                   const float* ecol, const float* er, const float* ei, int64_t R, int64_t cols,
                   float* po, int64_t sor, int64_t soc) {
  constexpr int64_t ld = 16 * NVC;  // floats per row of the column spectrum
  at::parallel_for(0, (M + MB - 1) / MB, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> t(H * ld), ts(H * ld), rows(R * ld), blk(R * cols * 2 * MB);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t m0 = task * MB, nm = std::min<int64_t>(MB, M - m0);
      for (int64_t i = 0; i < nm; ++i) {
        real_rows<NVC>(px + (m0 + i) * sxm, sxh, H, ecol, W, t.data(), ld);
        times_i(t.data(), H, ld, ts.data());
        complex_rows<NVC>(er, ei, H, R, t.data(), ts.data(), H, ld, rows.data());
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            float* b = blk.data() + (r * cols + c) * 2 * MB + 2 * i;
            b[0] = rows[r * ld + 2 * c], b[1] = rows[r * ld + 2 * c + 1];
          }
      }
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < cols; ++c)
          std::memcpy(po + r * sor + c * soc + 2 * m0, blk.data() + (r * cols + c) * 2 * MB,
                      sizeof(float) * 2 * nm);
    }
  });
}

template <int NVC, int NWV>
void sep2_inv_impl(const float* pb, int64_t sbr, int64_t sbc, int64_t M, int64_t R, int64_t cols,
                   const float* dr, const float* di, int64_t Hout, const float* dcol, int64_t Wout,
                   float* po, int64_t som, int64_t soh) {
  constexpr int64_t ld = 16 * NVC;
  constexpr int64_t wp = 16 * NWV;
  at::parallel_for(0, (M + MB - 1) / MB, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> blk(R * cols * 2 * MB), z(R * ld, 0.f), zs(R * ld), s(Hout * ld),
        y(Wout == wp ? 0 : Hout * wp);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t m0 = task * MB, nm = std::min<int64_t>(MB, M - m0);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < cols; ++c)
          std::memcpy(blk.data() + (r * cols + c) * 2 * MB, pb + r * sbr + c * sbc + 2 * m0,
                      sizeof(float) * 2 * nm);
      for (int64_t i = 0; i < nm; ++i) {
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            const float* b = blk.data() + (r * cols + c) * 2 * MB + 2 * i;
            z[r * ld + 2 * c] = b[0], z[r * ld + 2 * c + 1] = b[1];
          }
        times_i(z.data(), R, ld, zs.data());
        complex_rows<NVC>(dr, di, R, Hout, z.data(), zs.data(), R, ld, s.data());
        float* out = po + (m0 + i) * som;
        if (Wout == wp) {
          real_rows<NWV>(s.data(), ld, Hout, dcol, 2 * cols, out, soh);
        } else {
          real_rows<NWV>(s.data(), ld, Hout, dcol, 2 * cols, y.data(), wp);
          for (int64_t h = 0; h < Hout; ++h) std::memcpy(out + h * soh, y.data() + h * wp, sizeof(float) * Wout);
        }
      }
    }
  });
}

// Pads the real [rows, n] operand to [rows, nv * 16] floats (zeros beyond n).
std::vector<float> pad_rows(const float* p, int64_t s0, int64_t s1, int64_t rows, int64_t n, int64_t nv) {
  std::vector<float> out(rows * nv * 16, 0.f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) out[i * nv * 16 + j] = p[i * s0 + j * s1];
  return out;
}

// NVC: vectors per row of the complex intermediate (at most 32 kept columns); NWV: per row of
// the inverse's real output (at most 64 columns).
template <typename F>
void dispatch_nvc(int64_t nvc, F&& f) {
  switch (nvc) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
  }
  TORCH_CHECK(false, "sep2: at most 32 kept columns");
}

template <typename F>
void dispatch_nvc_nwv(int64_t nvc, int64_t nwv, F&& f) {
  TORCH_CHECK(nwv >= 1 && nwv <= 4, "sep2_inv: at most 64 output columns");
  dispatch_nvc(nvc, [&](auto a) {
    switch (nwv) {
      case 1: return f(a, std::integral_constant<int, 1>{});
      case 2: return f(a, std::integral_constant<int, 2>{});
      case 3: return f(a, std::integral_constant<int, 3>{});
      default: return f(a, std::integral_constant<int, 4>{});
    }
  });
}

}  // namespace

// x [M, H, W] float32 (unit stride along W), ecol [W, 2*cols] float32 (re/im interleaved
// columns, as SignalPlan's column operand), erow [R, H] complex64, out [R, cols, M] complex64
// (unit stride along M): out[r, c, m] = sum_h erow[r, h] sum_w x[m, h, w] ecol[w, c].
void sep2_fwd(const torch::Tensor& x, const torch::Tensor& ecol, const torch::Tensor& erow, torch::Tensor& out) {
  check_cpu("sep2_fwd", {&x, &ecol, &erow, &out});
  TORCH_CHECK(x.dim() == 3 && ecol.dim() == 2 && erow.dim() == 2 && out.dim() == 3, "sep2_fwd: ranks");
  TORCH_CHECK(x.scalar_type() == at::kFloat && ecol.scalar_type() == at::kFloat &&
                  erow.scalar_type() == at::kComplexFloat && out.scalar_type() == at::kComplexFloat,
              "sep2_fwd: float32 x and ecol, complex64 erow and out expected");
  const int64_t M = x.size(0), H = x.size(1), W = x.size(2), R = erow.size(0), cols = ecol.size(1) / 2;
  TORCH_CHECK(ecol.size(0) == W && ecol.size(1) == 2 * cols && erow.size(1) == H && out.size(0) == R &&
                  out.size(1) == cols && out.size(2) == M,
              "sep2_fwd: shapes do not match");
  TORCH_CHECK(x.stride(2) == 1 || W <= 1, "sep2_fwd: x needs unit stride along W");
  TORCH_CHECK(out.stride(2) == 1 || M <= 1, "sep2_fwd: out needs unit stride along M");
  if (M == 0 || R == 0 || cols == 0) return;
  const int64_t nvc = (2 * cols + 15) / 16;
  std::vector<float> ec = pad_rows(ecol.const_data_ptr<float>(), ecol.stride(0), ecol.stride(1), W, 2 * cols, nvc);
  std::vector<float> er, ei;
  split_complex(erow, er, ei);
  dispatch_nvc(nvc, [&](auto a) {
    sep2_fwd_impl<decltype(a)::value>(
        x.const_data_ptr<float>(), x.stride(0), x.stride(1), M, H, W, ec.data(), er.data(), ei.data(), R,
        cols, reinterpret_cast<float*>(out.data_ptr()), 2 * out.stride(0), 2 * out.stride(1));
  });
}

// band [R, cols, M] complex64 (unit stride along M), drow [Hout, R] complex64, dcol [2*cols,
// Wout] float32, out [M, Hout, Wout] float32 (unit stride along Wout): out[m, h, w] =
// sum_c re(S[h, c]) dcol[2c, w] + im(S[h, c]) dcol[2c + 1, w], S[h, c] = sum_r drow[h, r] band[r, c, m].
void sep2_inv(const torch::Tensor& band, const torch::Tensor& drow, const torch::Tensor& dcol, torch::Tensor& out) {
  check_cpu("sep2_inv", {&band, &drow, &dcol, &out});
  TORCH_CHECK(band.dim() == 3 && drow.dim() == 2 && dcol.dim() == 2 && out.dim() == 3, "sep2_inv: ranks");
  TORCH_CHECK(band.scalar_type() == at::kComplexFloat && drow.scalar_type() == at::kComplexFloat &&
                  dcol.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat,
              "sep2_inv: complex64 band and drow, float32 dcol and out expected");
  const int64_t R = band.size(0), cols = band.size(1), M = band.size(2), Hout = drow.size(0), Wout = dcol.size(1);
  TORCH_CHECK(drow.size(1) == R && dcol.size(0) == 2 * cols && out.size(0) == M && out.size(1) == Hout &&
                  out.size(2) == Wout,
              "sep2_inv: shapes do not match");
  TORCH_CHECK(band.stride(2) == 1 || M <= 1, "sep2_inv: band needs unit stride along M");
  TORCH_CHECK(out.stride(2) == 1 || Wout <= 1, "sep2_inv: out needs unit stride along Wout");
  if (M == 0 || Hout == 0 || Wout == 0) return;
  if (R == 0 || cols == 0) {
    out.zero_();
    return;
  }
  const int64_t nvc = (2 * cols + 15) / 16, nwv = (Wout + 15) / 16;
  std::vector<float> dc = pad_rows(dcol.const_data_ptr<float>(), dcol.stride(0), dcol.stride(1), 2 * cols, Wout, nwv);
  std::vector<float> dr, di;
  split_complex(drow, dr, di);
  dispatch_nvc_nwv(nvc, nwv, [&](auto a, auto b) {
    sep2_inv_impl<decltype(a)::value, decltype(b)::value>(
        reinterpret_cast<const float*>(band.const_data_ptr()), 2 * band.stride(0), 2 * band.stride(1), M, R,
        cols, dr.data(), di.data(), Hout, dc.data(), Wout, out.data_ptr<float>(), out.stride(0), out.stride(1));
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cgemm_fold", &cgemm_fold,
        "out[t] = Re(sum_f e[f, t] (a[f] @ b[f])) for complex64 a, b, e and float32 out (CPU)");
  m.def("cgemm_re", &cgemm_re, "out[f] (+)= Re(a[f] @ b[f]) for complex64 a, b and float32 out (CPU)");
  m.def("cgemm", &cgemm, "out[f] (+)= a[f] @ b[f] for complex64 (b also float32) CPU tensors");
  m.def("sep2_fwd", &sep2_fwd, "the separable 2-D forward transform, both stages per block of maps (CPU)");
  m.def("sep2_inv", &sep2_inv, "the separable 2-D inverse transform, both stages per block of maps (CPU)");
  m.def("cgemm_taps", &cgemm_taps,
        "out[f] (+)= a[f] @ (sum_t e[f, t] w[t]) for complex64 a, e, out and float32 w (CPU)");
}
