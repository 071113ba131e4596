// Token embedding: a row gather in forward, a scatter-add into the table's gradient in backward
// (ids may repeat, so backward accumulates and runs on one thread).
#include "cpu.h"

int sft_embedding_fwd_f32(const int32_t *ids, const float *table, float *out, int64_t N,
                          int64_t C, int64_t V) {
    for (int64_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return sft_set_error("embedding: token id %d at row %lld is outside [0, %lld)",
                                 ids[i], (long long)i, (long long)V);
    for (int64_t i = 0; i < N; i++)
        memcpy(out + i * C, table + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
    return 0;
}

SFT_INLINE void sft_embedding_bwd_f32_impl(const int32_t *ids, const float *restrict dout,
                                           float *restrict dtable, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        if (ids[i] < 0) continue;   // ids were checked in forward; never write outside
        float *row = dtable + (int64_t)ids[i] * C;
        const float *d = dout + i * C;
        for (int64_t c = 0; c < C; c++) row[c] += d[c];
    }
}
SFT_DISPATCH_VOID(sft_embedding_bwd_f32,
                  (const int32_t *ids, const float *dout, float *dtable, int64_t N, int64_t C),
                  (ids, dout, dtable, N, C))
