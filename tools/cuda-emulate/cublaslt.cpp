// The emulated cuBLASLt (libcublasLt.so.12): the calls sft's loader resolves
// (cuda_loader.c, cublaslt_symbols), for the matrix products sft_cublaslt_gemm asks: column-
// major D = alpha op(A) op(B) + beta C with op = N or T, strided batches, A and B f32, bf16 or
// f16 (the same type), C = D f32 or the inputs' type, f32 compute (TF32 compute runs as f32:
// the emulation is more exact than a GPU, never less). Products run on OpenBLAS's sgemm
// (16-bit operands widened first). Any other descriptor setting is an error naming it, and
// every operand must lie in device memory (checked with the emulated driver, which this
// library links to): cublasLtGetStatusName then returns the detail.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

extern "C" int sft_emulated_device_range(unsigned long long p, size_t n, char *why, size_t cap);
extern "C" void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float *a,
                            int lda, const float *b, int ldb, float beta, float *c, int ldc);

enum {
    OK = 0, NOT_INITIALIZED = 1, ALLOC_FAILED = 3, INVALID_VALUE = 7, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15,
};
enum { R_32F = 0, R_16F = 2, R_16BF = 14 };
enum { COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77 };

namespace {

thread_local int last_status = OK;
thread_local std::string last_detail;

int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fail(int status, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    last_status = status;
    last_detail = std::string("sft emulated GPU: ") + buf;
    return status;
}

struct Handle { int tag; };
struct MatmulDesc {
    int compute;
    int32_t trans_a = 0, trans_b = 0;
};
struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch = 1;
    int64_t stride = 0;
};
struct Preference {
    uint64_t workspace = 0;
};

size_t type_size(int t) { return t == R_32F ? 4 : 2; }
const char *type_name(int t) { return t == R_32F ? "f32" : t == R_16F ? "f16" : t == R_16BF ? "bf16" : "?"; }

float half_to_f32(int type, uint16_t h) {
    uint32_t u;
    if (type == R_16BF) {
        u = (uint32_t)h << 16;
    } else {
        const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
        if (exp == 0x1f) {
            u = sign | 0x7f800000u | (man << 13);
        } else if (exp != 0) {
            u = sign | ((exp + 112) << 23) | (man << 13);
        } else {
            const float f = (float)man * 5.9604644775390625e-08f;
            return sign ? -f : f;
        }
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_half(int type, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (type == R_16BF) {
        if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
        return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    const uint32_t a = u & 0x7fffffffu;
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (a > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu);
    if (a >= 0x477ff000u) return sign | 0x7c00u;
    if (a < 0x38800000u) {
        float g;
        memcpy(&g, &a, 4);
        g += 0.5f;
        uint32_t gb;
        memcpy(&gb, &g, 4);
        return sign | (uint16_t)(gb - 0x3f000000u);
    }
    return sign | (uint16_t)((a + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13);
}

/// The stored (rows × cols, ld) matrix of batch entry b as f32, column-major with ld = rows.
std::vector<float> widen(const void *base, const Layout &l, int b) {
    std::vector<float> out(l.rows * l.cols);
    const char *p = (const char *)base + (size_t)(b * l.stride) * type_size(l.type);
    for (uint64_t c = 0; c < l.cols; c++)
        for (uint64_t r = 0; r < l.rows; r++) {
            const size_t i = c * (size_t)l.ld + r;
            out[c * l.rows + r] = l.type == R_32F ? ((const float *)p)[i] : half_to_f32(l.type, ((const uint16_t *)p)[i]);
        }
    return out;
}

int check_operand(const char *name, const void *p, const Layout &l) {
    if (!p) return fail(INVALID_VALUE, "cublasLtMatmul operand %s is NULL", name);
    const size_t elements = (size_t)(l.batch - 1) * (size_t)l.stride + (size_t)(l.cols - 1) * (size_t)l.ld + l.rows;
    char why[512];
    if (sft_emulated_device_range((unsigned long long)(uintptr_t)p, elements * type_size(l.type), why, sizeof why) != 0)
        return fail(INVALID_VALUE, "cublasLtMatmul operand %s (%llu × %llu %s, ld %lld, batch %d): %s", name,
                    (unsigned long long)l.rows, (unsigned long long)l.cols, type_name(l.type), (long long)l.ld, l.batch, why);
    return OK;
}

/// Shapes and types of a product; OK or the status with the detail.
int check_problem(const MatmulDesc &d, const Layout &a, const Layout &b, const Layout &c, const Layout &dl) {
    const uint64_t m = d.trans_a ? a.cols : a.rows, k = d.trans_a ? a.rows : a.cols;
    const uint64_t kb = d.trans_b ? b.cols : b.rows, n = d.trans_b ? b.rows : b.cols;
    if (k != kb || dl.rows != m || dl.cols != n)
        return fail(INVALID_VALUE, "cublasLtMatmul shapes do not agree: op(A) %llu × %llu, op(B) %llu × %llu, D %llu × %llu",
                    (unsigned long long)m, (unsigned long long)k, (unsigned long long)kb, (unsigned long long)n,
                    (unsigned long long)dl.rows, (unsigned long long)dl.cols);
    if (k == 0) return fail(NOT_SUPPORTED, "cublasLtMatmul with K = 0");
    if (a.type != b.type) return fail(NOT_SUPPORTED, "A is %s and B %s: mixed input types are not emulated", type_name(a.type), type_name(b.type));
    if (c.type != dl.type || c.rows != dl.rows || c.cols != dl.cols || c.ld != dl.ld || c.batch != dl.batch || c.stride != dl.stride)
        return fail(NOT_SUPPORTED, "C and D with different layouts are not emulated");
    if (dl.type != R_32F && dl.type != a.type)
        return fail(NOT_SUPPORTED, "D is %s with %s inputs: not emulated", type_name(dl.type), type_name(a.type));
    if (a.batch != b.batch || a.batch != dl.batch)
        return fail(INVALID_VALUE, "batch counts differ: A %d, B %d, D %d", a.batch, b.batch, dl.batch);
    return OK;
}

}  // namespace

/// What sft's loader reports when this library is loaded (cuda_loader.c, sft_cuda_emulation).
EXPORT const char *sft_emulated_gpu(void) { return "sft emulated GPU (tools/cuda-emulate): matrix products run on OpenBLAS on the CPU"; }

EXPORT int cublasLtCreate(void **h) {
    *h = new Handle{1};
    return OK;
}
EXPORT int cublasLtDestroy(void *h) {
    delete (Handle *)h;
    return OK;
}
EXPORT size_t cublasLtGetVersion(void) { return 129900; }

EXPORT const char *cublasLtGetStatusName(int st) {
    thread_local std::string text;
    const char *name = st == OK ? "CUBLAS_STATUS_SUCCESS" : st == NOT_INITIALIZED ? "CUBLAS_STATUS_NOT_INITIALIZED"
                       : st == ALLOC_FAILED ? "CUBLAS_STATUS_ALLOC_FAILED" : st == INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE"
                       : st == EXECUTION_FAILED ? "CUBLAS_STATUS_EXECUTION_FAILED" : st == NOT_SUPPORTED ? "CUBLAS_STATUS_NOT_SUPPORTED"
                       : "CUBLAS_STATUS_UNKNOWN";
    if (st != OK && st == last_status && !last_detail.empty()) {
        text = std::string(name) + ": " + last_detail;
        return text.c_str();
    }
    return name;
}

EXPORT int cublasLtMatmulDescCreate(void **desc, int compute, int scale) {
    if (compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32)
        return fail(NOT_SUPPORTED, "compute type %d is not emulated (32F and 32F_FAST_TF32 are)", compute);
    if (scale != R_32F) return fail(NOT_SUPPORTED, "scale type %d is not emulated (f32 is)", scale);
    *desc = new MatmulDesc{compute};
    return OK;
}
EXPORT int cublasLtMatmulDescDestroy(void *desc) {
    delete (MatmulDesc *)desc;
    return OK;
}
EXPORT int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t size) {
    auto *d = (MatmulDesc *)desc;
    if ((attr == 3 || attr == 4) && size == sizeof(int32_t)) {  // TRANSA, TRANSB
        int32_t op;
        memcpy(&op, buf, sizeof op);
        if (op < 0 || op > 2) return fail(INVALID_VALUE, "transpose operation %d", op);
        (attr == 3 ? d->trans_a : d->trans_b) = op != 0;  // T and C are the same for real types
        return OK;
    }
    return fail(NOT_SUPPORTED, "matmul descriptor attribute %d (size %zu) is not emulated (TRANSA, TRANSB are)", attr, size);
}

EXPORT int cublasLtMatrixLayoutCreate(void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (type != R_32F && type != R_16F && type != R_16BF) return fail(NOT_SUPPORTED, "data type %d is not emulated", type);
    if (ld < (int64_t)rows || ld < 1) return fail(INVALID_VALUE, "layout %llu × %llu with ld %lld (column-major needs ld >= rows)",
                                                  (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
    *layout = new Layout{type, rows, cols, ld};
    return OK;
}
EXPORT int cublasLtMatrixLayoutDestroy(void *layout) {
    delete (Layout *)layout;
    return OK;
}
EXPORT int cublasLtMatrixLayoutSetAttribute(void *layout, int attr, const void *buf, size_t size) {
    auto *l = (Layout *)layout;
    if (attr == 5 && size == sizeof(int32_t)) {  // BATCH_COUNT
        memcpy(&l->batch, buf, size);
        if (l->batch < 1) return fail(INVALID_VALUE, "batch count %d", l->batch);
        return OK;
    }
    if (attr == 6 && size == sizeof(int64_t)) {  // STRIDED_BATCH_OFFSET
        memcpy(&l->stride, buf, size);
        if (l->stride < 0) return fail(NOT_SUPPORTED, "negative batch stride %lld", (long long)l->stride);
        return OK;
    }
    if (attr == 1 && size == sizeof(int32_t)) {  // ORDER: column-major only
        int32_t order;
        memcpy(&order, buf, size);
        if (order == 0) return OK;
    }
    return fail(NOT_SUPPORTED, "matrix layout attribute %d (size %zu) is not emulated (BATCH_COUNT, STRIDED_BATCH_OFFSET are)", attr, size);
}

EXPORT int cublasLtMatmulPreferenceCreate(void **pref) {
    *pref = new Preference{};
    return OK;
}
EXPORT int cublasLtMatmulPreferenceDestroy(void *pref) {
    delete (Preference *)pref;
    return OK;
}
EXPORT int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t size) {
    if (attr == 1 && size == sizeof(uint64_t)) {  // MAX_WORKSPACE_BYTES
        memcpy(&((Preference *)pref)->workspace, buf, size);
        return OK;
    }
    if (attr >= 5 && attr <= 8 && size == sizeof(uint32_t)) return OK;  // MIN_ALIGNMENT_{A,B,C,D}_BYTES: any will do
    return fail(NOT_SUPPORTED, "matmul preference attribute %d (size %zu) is not emulated", attr, size);
}

struct Heuristic {
    uint64_t algo[8];
    size_t workspace_size;
    int state;
    float waves_count;
    int reserved[4];
};

EXPORT int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *,
                                          int requested, Heuristic *results, int *returned) {
    if (!handle || !desc || !a || !b || !c || !d || requested < 1 || !results || !returned)
        return fail(INVALID_VALUE, "cublasLtMatmulAlgoGetHeuristic: a NULL argument or no result slot");
    *returned = 0;
    if (int st = check_problem(*(MatmulDesc *)desc, *(Layout *)a, *(Layout *)b, *(Layout *)c, *(Layout *)d)) return st;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo[0] = 0x5f7e;  // the one "algorithm": OpenBLAS
    results[0].waves_count = 1;
    *returned = 1;
    return OK;
}

EXPORT int cublasLtMatmul(void *handle, void *desc_, const void *alpha_, const void *A, void *la_, const void *B,
                          void *lb_, const void *beta_, const void *C, void *lc_, void *D, void *ld_, const void *algo,
                          void *workspace, size_t workspace_bytes, void *) {
    if (!handle || !desc_ || !la_ || !lb_ || !lc_ || !ld_ || !alpha_ || !beta_)
        return fail(INVALID_VALUE, "cublasLtMatmul: a NULL handle, descriptor, alpha or beta");
    if (!algo) return fail(NOT_SUPPORTED, "cublasLtMatmul without an algorithm from the heuristic is not emulated");
    const MatmulDesc &desc = *(MatmulDesc *)desc_;
    const Layout &la = *(Layout *)la_, &lb = *(Layout *)lb_, &lc = *(Layout *)lc_, &ld = *(Layout *)ld_;
    if (int st = check_problem(desc, la, lb, lc, ld)) return st;
    if (int st = check_operand("A", A, la)) return st;
    if (int st = check_operand("B", B, lb)) return st;
    if (int st = check_operand("C", C, lc)) return st;
    if (int st = check_operand("D", D, ld)) return st;
    if (workspace_bytes) {
        char why[512];
        if (sft_emulated_device_range((unsigned long long)(uintptr_t)workspace, workspace_bytes, why, sizeof why) != 0)
            return fail(INVALID_VALUE, "cublasLtMatmul workspace (%zu bytes): %s", workspace_bytes, why);
    }
    const float alpha = *(const float *)alpha_, beta = *(const float *)beta_;
    const int m = (int)ld.rows, n = (int)ld.cols, k = (int)(desc.trans_a ? la.rows : la.cols);
    const int ta = desc.trans_a ? 112 : 111, tb = desc.trans_b ? 112 : 111;  // CblasTrans, CblasNoTrans
    const size_t dsize = type_size(ld.type);
    for (int bi = 0; bi < ld.batch; bi++) {
        char *d = (char *)D + (size_t)(bi * ld.stride) * dsize;
        const char *c = (const char *)C + (size_t)(bi * lc.stride) * dsize;
        if (la.type == R_32F) {
            float *df = (float *)d;
            for (int j = 0; j < n; j++) {
                float *col = df + (size_t)j * ld.ld;
                if (beta == 0.0f) {
                    for (int i = 0; i < m; i++) col[i] = 0.0f;  // D = op(A) op(B): old D's NaNs ignored
                } else if (c != d) {
                    memcpy(col, (const float *)c + (size_t)j * lc.ld, (size_t)m * 4);
                }
            }
            cblas_sgemm(102, ta, tb, m, n, k, alpha, (const float *)A + (size_t)bi * la.stride, (int)la.ld,
                        (const float *)B + (size_t)bi * lb.stride, (int)lb.ld, beta, df, (int)ld.ld);
            continue;
        }
        // 16-bit inputs: widen A and B, multiply in f32, then add beta C and store D's type.
        const std::vector<float> a = widen(A, la, bi), b = widen(B, lb, bi);
        std::vector<float> prod((size_t)m * n);
        cblas_sgemm(102, ta, tb, m, n, k, alpha, a.data(), (int)la.rows, b.data(), (int)lb.rows, 0.0f, prod.data(), m);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const size_t at = (size_t)j * ld.ld + i;
                float v = prod[(size_t)j * m + i];
                if (ld.type == R_32F) {
                    if (beta != 0.0f) v += beta * ((const float *)c)[at];
                    ((float *)d)[at] = v;
                } else {
                    if (beta != 0.0f) v += beta * half_to_f32(ld.type, ((const uint16_t *)c)[at]);
                    ((uint16_t *)d)[at] = f32_to_half(ld.type, v);
                }
            }
    }
    return OK;
}
