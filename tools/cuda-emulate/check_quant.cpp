// Runs the 4-bit CUDA kernels (CUDAKernels.quant, written by the test as quant.cu with
// `extern "C"` removed) on the CPU through emu.h and compares them with the C kernels of
// quant_nf4.c: tile decoding (f32, and bf16 / f16 as the cast kernels round) bit for bit against
// the readable reference, the double-quantized
// absmax bit for bit, the matrix-vector product to summation-order rounding. Built and run by
// CUDAQuantKernelEmulationTests; prints one line per check and exits non-zero on a mismatch.
#include "emu.h"   // tools/cuda-emulate
#include <cstdio>
#include <random>
#include <string>

namespace gpu {
#include "quant.cu"
}
#include "sftkernels.h"

static int failures = 0;
static std::mt19937 rng(4321);

static void compare(const std::string &what, const std::vector<float> &got, const std::vector<float> &want, double rtol,
                    double atol = 0) {
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < want.size(); i++) {
        const double e = std::fabs((double)got[i] - want[i]);
        const bool ok = got[i] == want[i] || e <= atol + rtol * std::fabs((double)want[i]);
        if (!ok) { if (!bad) first = i; bad++; }
        if (!(e <= worst)) worst = e;
    }
    std::printf("%-64s %s  max|err| %.3g%s\n", what.c_str(), bad ? "FAIL" : "ok  ", worst,
                bad ? (" first bad [" + std::to_string(first) + "] got " + std::to_string(got[first]) + " want " +
                       std::to_string(want[first])).c_str() : "");
    if (bad) failures++;
}

static void check(int type, int64_t rows, int64_t cols, int64_t bs, bool doubleQuant) {
    const std::string name = std::string(type == SFT_Q4_NF4 ? "nf4" : "fp4") + " " + std::to_string(rows) + "x" +
                             std::to_string(cols) + " bs " + std::to_string(bs) + (doubleQuant ? " dq" : "");
    const int64_t n = rows * cols, nb = (n + bs - 1) / bs;
    std::normal_distribution<float> normal(0, 1);
    std::vector<float> w(n);
    for (auto &v : w) v = normal(rng);
    std::vector<uint8_t> packed((n + 1) / 2);
    std::vector<float> absmax(nb);
    sft_nf4_quantize_ref(type, w.data(), n, bs, packed.data(), absmax.data());
    const float *code = sft_q4_code(type);
    std::vector<float> map(256);
    sft_dynamic_map_signed(map.data());

    // Double quantization: the absmax as 8-bit codes + scales per 256 + offset.
    std::vector<uint8_t> codes(nb);
    std::vector<float> absmax2((nb + 255) / 256);
    float offset = 0;
    if (doubleQuant) {
        double sum = 0;
        for (float a : absmax) sum += a;
        offset = (float)(sum / nb);
        std::vector<float> centred(nb);
        for (int64_t b = 0; b < nb; b++) centred[b] = absmax[b] - offset;
        sft_quantize_blockwise8_ref(centred.data(), nb, 256, map.data(), codes.data(), absmax2.data());
        std::vector<float> want(nb), got(nb, NAN);
        sft_dequantize_blockwise8(codes.data(), absmax2.data(), map.data(), 256, offset, 0, nb, want.data());
        launch(gpu::sft_dq8_absmax_f32, {3, 1, 1}, 64, (const gpu::u8 *)codes.data(), (const float *)absmax2.data(),
               (const float *)map.data(), (int64_t)0, nb, offset, got.data());
        compare(name + " double-quantized absmax", got, want, 0);
        absmax = want;   // what the 4-bit values are scaled by from here on
    }

    // Whole matrix, then a tile of rows starting mid-block at an odd value.
    std::vector<float> want(n), got(n, NAN);
    sft_nf4_dequantize_ref(type, packed.data(), absmax.data(), n, bs, want.data());
    launch(gpu::sft_q4_dequantize_f32, {4, 1, 1}, 64, (const gpu::u8 *)packed.data(), (const float *)absmax.data(), code, bs,
           (int64_t)0, (int64_t)0, n, got.data());
    compare(name + " decode all rows", got, want, 0);
    // 16-bit tiles: the f32 reference rounded by the cast kernels' conversions.
    for (int bf16 = 0; bf16 < 2; bf16++) {
        std::vector<uint16_t> h(n, 0xFFFF);
        launch(gpu::sft_q4_dequantize_h, {3, 1, 1}, 64, (const gpu::u8 *)packed.data(), (const float *)absmax.data(), code, bs,
               (int64_t)0, (int64_t)0, n, (gpu::u16 *)h.data(), bf16);
        std::vector<float> got16(n), want16(n);
        for (int64_t i = 0; i < n; i++) {
            got16[i] = bf16 ? gpu::bf16_to_f32(h[i]) : gpu::f16_to_f32(h[i]);
            want16[i] = bf16 ? gpu::bf16_to_f32(gpu::f32_to_bf16(want[i])) : gpu::f16_to_f32(gpu::f32_to_f16(want[i]));
        }
        compare(name + (bf16 ? " decode all rows to bf16" : " decode all rows to f16"), got16, want16, 0);
    }
    const int64_t r0 = rows / 3, tr = rows - r0 - 1, start = r0 * cols, count = tr * cols;
    const int64_t fb = start / bs, lb = (start + count - 1) / bs;
    std::vector<float> tileAbsmax(absmax.begin() + fb, absmax.begin() + lb + 1), tile(count, NAN);
    launch(gpu::sft_q4_dequantize_f32, {2, 1, 1}, 96, (const gpu::u8 *)packed.data(), (const float *)tileAbsmax.data(), code,
           bs, fb, start, count, tile.data());
    compare(name + " decode rows " + std::to_string(r0) + "..<" + std::to_string(r0 + tr) + " (tile scales)", tile,
            std::vector<float>(want.begin() + start, want.begin() + start + count), 0);

    // y (2, rows) = x (2, cols) Wᵀ against the C matvec.
    std::vector<float> x(2 * cols), y(2 * rows, NAN), yref(2 * rows);
    for (auto &v : x) v = normal(rng);
    for (int r = 0; r < 2; r++)
        sft_nf4_matvec(type, packed.data(), absmax.data(), bs, x.data() + r * cols, yref.data() + r * rows, rows, cols, 0, 1);
    launch(gpu::sft_q4_matvec_f32, {(unsigned)rows, 2, 1}, 64, (const gpu::u8 *)packed.data(), (const float *)absmax.data(),
           code, bs, (const float *)x.data(), y.data(), rows, cols);
    // Summation order differs (lanes of 16 vs a block reduction): a few ulps of Σ|terms|.
    compare(name + " matvec (2 rows of x)", y, yref, 1e-5, 1e-5);
}

int main() {
    check(SFT_Q4_NF4, 13, 64, 64, false);
    check(SFT_Q4_FP4, 9, 45, 32, false);
    check(SFT_Q4_NF4, 21, 77, 64, true);
    check(SFT_Q4_FP4, 300, 24, 32, true);   // > 256 blocks: two double-quantization scales
    std::printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
