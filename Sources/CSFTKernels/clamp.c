// Clamp to [-limit, limit] (MPT's clip_qkv on the fused q/k/v projection), forward and
// backward: torch.clamp passes the gradient where -limit <= x <= limit, and none elsewhere.
#include "cpu.h"

SFT_INLINE void sft_clamp_fwd_f32_impl(const float *restrict x, float *restrict y, int64_t n, float limit) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < -limit ? -limit : (x[i] > limit ? limit : x[i]);
}
SFT_DISPATCH_VOID(sft_clamp_fwd_f32, (const float *x, float *y, int64_t n, float limit), (x, y, n, limit))

SFT_INLINE void sft_clamp_bwd_f32_impl(const float *restrict dy, const float *restrict x, float *restrict dx,
                                       int64_t n, float limit) {
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] >= -limit && x[i] <= limit ? dy[i] : 0.0f;
}
SFT_DISPATCH_VOID(sft_clamp_bwd_f32, (const float *dy, const float *x, float *dx, int64_t n, float limit),
                  (dy, x, dx, n, limit))
