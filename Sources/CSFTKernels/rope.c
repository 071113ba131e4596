// Rotary position embedding (Su et al. 2021, RoFormer) in the rotate-half layout HF Llama uses:
// dimension i pairs with i + D/2. Positions come per token, so packed documents restart at 0.
// Backward is the same rotation by the negative angle (inverse != 0).
#define _GNU_SOURCE // sincosf
#include "cpu.h"

enum { ROPE_CHUNK = 128 };   // frequencies handled per pass (cos/sin kept on the stack)

/// cos and sin (negated for the inverse rotation) of position * inv_freq[i] for m frequencies:
/// the angle in f32 like the HF reference, then one sincosf for both (glibc's sinf and cosf give
/// the same values; without -fno-math-errno the compiler would not merge two calls into it).
SFT_INLINE void rope_angles(int32_t position, const float *inv_freq, int64_t m, int inverse,
                            float *cs, float *sn) {
    for (int64_t i = 0; i < m; i++) {
        float angle = (float)position * inv_freq[i], s;
        sincosf(angle, &s, &cs[i]);
        sn[i] = inverse ? -s : s;
    }
}

SFT_INLINE void sft_rope_f32_impl(const float *x, int64_t ldx, float *y, int64_t ldy,
                                  const int32_t *pos, const float *inv_freq, int64_t N,
                                  int64_t H, int64_t D, int inverse, int part, int nparts) {
    const int64_t half = D / 2;
    float cs[ROPE_CHUNK], sn[ROPE_CHUNK], a[ROPE_CHUNK], b[ROPE_CHUNK];
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            const int64_t m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            rope_angles(pos[n], inv_freq + i0, m, inverse, cs, sn);
            for (int64_t h = 0; h < H; h++) {
                const float *xh = x + n * ldx + h * D + i0;
                float *yh = y + n * ldy + h * D + i0;
                // Copy first so x == y (in place) is safe and the loop below vectorizes.
                memcpy(a, xh, (size_t)m * sizeof(float));
                memcpy(b, xh + half, (size_t)m * sizeof(float));
                for (int64_t i = 0; i < m; i++) {
                    yh[i] = a[i] * cs[i] - b[i] * sn[i];
                    yh[i + half] = b[i] * cs[i] + a[i] * sn[i];
                }
            }
        }
    }
}
SFT_DISPATCH_VOID(sft_rope_f32,
                  (const float *x, int64_t ldx, float *y, int64_t ldy, const int32_t *pos,
                   const float *inv_freq, int64_t N, int64_t H, int64_t D, int inverse, int part,
                   int nparts),
                  (x, ldx, y, ldy, pos, inv_freq, N, H, D, inverse, part, nparts))

// bf16 activations (mixed precision): x and y bf16, angles and the rotation in f32 exactly as
// above, each result rounded to bf16 once (nearest even). In place (x == y) is safe: a head's
// pair of halves is widened before either is written.
SFT_INLINE void sft_rope_bf16_impl(const uint16_t *x, int64_t ldx, uint16_t *y, int64_t ldy,
                                   const int32_t *pos, const float *inv_freq, int64_t N,
                                   int64_t H, int64_t D, int inverse, int part, int nparts) {
    const int64_t half = D / 2;
    float cs[ROPE_CHUNK], sn[ROPE_CHUNK], a[ROPE_CHUNK], b[ROPE_CHUNK];
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            const int64_t m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            rope_angles(pos[n], inv_freq + i0, m, inverse, cs, sn);
            for (int64_t h = 0; h < H; h++) {
                const uint16_t *xh = x + n * ldx + h * D + i0;
                uint16_t *yh = y + n * ldy + h * D + i0;
                sft_bf16_widen(xh, a, m);
                sft_bf16_widen(xh + half, b, m);
                for (int64_t i = 0; i < m; i++) {
                    yh[i] = sft_bf16_round(a[i] * cs[i] - b[i] * sn[i]);
                    yh[i + half] = sft_bf16_round(b[i] * cs[i] + a[i] * sn[i]);
                }
            }
        }
    }
}
SFT_DISPATCH_VOID(sft_rope_bf16,
                  (const uint16_t *x, int64_t ldx, uint16_t *y, int64_t ldy, const int32_t *pos,
                   const float *inv_freq, int64_t N, int64_t H, int64_t D, int inverse, int part,
                   int nparts),
                  (x, ldx, y, ldy, pos, inv_freq, N, H, D, inverse, part, nparts))
