// Runs sft's CUDA kernel sources on the CPU through emu.h and compares every result with the C
// kernels of CSFTKernels (the CPU backend's, themselves tested against naive references): the
// indexing, masking, document bounds and reductions of the CUDA code, checked without a GPU.
// Built and run by the test CUDAKernelEmulationTests (which writes the module sources as
// elementwise.cu, norm.cu, attention.cu, training.cu with `extern "C"` removed); prints one line
// per check and exits non-zero on a mismatch.
#include "emu.h"   // tools/cuda-emulate
#include <cstdio>
#include <random>
#include <string>

// The four modules, `extern "C"` removed (their names clash with the C kernels), each in its own
// namespace (each repeats the prelude).
namespace gpu {
namespace elementwise {
#include "elementwise.cu"
}
namespace norm {
#include "norm.cu"
}
namespace attention {
#include "attention.cu"
}
namespace training {
#include "training.cu"
}
namespace activations {
#include "activations.cu"
}
namespace columns {
#include "columns.cu"
}
using namespace elementwise;
using namespace norm;
using namespace attention;
using namespace training;
using namespace activations;
using namespace columns;
}
#include "sftkernels.h"

static int failures = 0;
static std::mt19937 rng(1234);

static std::vector<float> randoms(size_t n, float scale = 1) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = u(rng);
    return v;
}

static void compare(const char *what, const std::vector<float> &got, const std::vector<float> &want, double rtol,
                    double atol) {
    double worst = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double e = got[i] == want[i] ? 0.0 : std::fabs((double)got[i] - want[i]);
        bool ok = e <= atol + rtol * std::fabs((double)want[i]) || got[i] == want[i];
        if (!ok) { if (!bad) first = i; bad++; }
        if (e > worst || std::isnan(e)) worst = std::isnan(e) ? INFINITY : e;
    }
    std::printf("%-60s %s  max|err| %.3g%s\n", what, bad ? "FAIL" : "ok  ", worst,
                bad ? (" first bad [" + std::to_string(first) + "] got " + std::to_string(got[first]) + " want " +
                       std::to_string(want[first])).c_str() : "");
    if (bad) failures++;
}

static std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }

// ---------------------------------------------------------------------------------------------

template <typename Fwd, typename Dq, typename Dkdv>
static void attention_case(const char *name, Fwd fwd, Dq dq_kernel, Dkdv dkdv_kernel, int B, int T, int H, int KV,
                           int D, bool docs, bool alibi, bool fused, int window = 0) {
    const int width = (H + 2 * KV) * D, rows = B * T;
    const long ldq = fused ? width : H * D, ldk = fused ? width : KV * D, ldv = ldk, ldo = H * D;
    std::vector<float> qkv = randoms((size_t)rows * width), qs = randoms((size_t)rows * H * D),
                       ks = randoms((size_t)rows * KV * D), vs = randoms((size_t)rows * KV * D);
    const float *q = fused ? qkv.data() : qs.data();
    const float *k = fused ? qkv.data() + H * D : ks.data();
    const float *v = fused ? qkv.data() + (H + KV) * D : vs.data();
    std::vector<int32_t> doc(rows);
    for (int b = 0; b < B; b++) {
        int id = 0;
        for (int t = 0; t < T; t++) { if (t > 0 && rng() % 100 < 7) id++; doc[b * T + t] = docs ? id : 0; }
    }
    std::vector<float> slopes(H);
    for (int h = 0; h < H; h++) slopes[h] = std::pow(2.0f, -8.0f * (h + 1) / H);
    const int32_t *pd = docs ? doc.data() : nullptr;
    const float *pa = alibi ? slopes.data() : nullptr;
    const float scale = 1 / std::sqrt((float)D);

    std::vector<float> o_ref(rows * H * D), lse_ref(B * H * T);
    sft_attention_fwd_f32(q, ldq, k, ldk, v, ldv, o_ref.data(), ldo, lse_ref.data(), pd, pa, window, B, T, H, KV, D, scale,
                          nullptr, 0, 1);
    std::vector<int> start(rows), end(rows);
    launch(gpu::sft_attn_doc_bounds, {(unsigned)B, 1, 1}, 1024, pd, start.data(), end.data(), T, window);
    std::vector<float> o = nans(rows * H * D), lse = nans(B * H * T);
    launch(fwd, {(unsigned)((T + 31) / 32), (unsigned)H, (unsigned)B}, 128, q, ldq, k, ldk, v, ldv, o.data(), ldo,
           lse.data(), (const int *)start.data(), pa, T, H, KV, D, scale);
    std::string tag = std::string(name) + " B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" +
                      std::to_string(H) + " KV=" + std::to_string(KV) + " D=" + std::to_string(D) +
                      (docs ? " docs" : "") + (alibi ? " alibi" : "") + (fused ? " fused" : "");
    compare((tag + " o").c_str(), o, o_ref, 2e-4, 2e-5);
    compare((tag + " lse").c_str(), lse, lse_ref, 2e-5, 2e-5);

    std::vector<float> dout = randoms((size_t)rows * H * D);
    const long ldg = fused ? width : 0;
    std::vector<float> gref(fused ? rows * width : rows * (H + 2 * KV) * D), g = nans(gref.size());
    auto views = [&](std::vector<float> &buf, float *&gq, long &lq, float *&gk, long &lk, float *&gv, long &lv) {
        if (fused) { gq = buf.data(); gk = buf.data() + H * D; gv = buf.data() + (H + KV) * D; lq = lk = lv = ldg; }
        else { gq = buf.data(); gk = gq + rows * H * D; gv = gk + rows * KV * D; lq = H * D; lk = lv = KV * D; }
    };
    float *rq, *rk, *rv, *gq, *gk, *gv;
    long lq, lk, lv;
    views(gref, rq, lq, rk, lk, rv, lv);
    if (fused) std::fill(gref.begin(), gref.end(), 0.0f);
    std::vector<float> work(sft_attention_bwd_work_floats(B, T, H, KV, D) + 1);
    sft_attention_bwd_f32(q, ldq, k, ldk, v, ldv, o_ref.data(), ldo, dout.data(), ldo, lse_ref.data(), pd, pa, window, rq, lq,
                          rk, lk, rv, lv, B, T, H, KV, D, scale, work.data(), nullptr, 0, 1);
    sft_attention_bwd_sum_f32(work.data(), rq, lq, B, T, H, KV, D, 0, 1);
    views(g, gq, lq, gk, lk, gv, lv);
    if (fused) std::fill(g.begin(), g.end(), 0.0f);   // the fused buffer's other columns
    std::vector<float> delta = nans(B * H * T);
    launch(gpu::sft_attn_delta_f32, {(unsigned)((rows * H + 3) / 4), 1, 1}, 128, (const float *)o.data(), (long)ldo,
           (const float *)dout.data(), (long)ldo, delta.data(), B, T, H, D);
    launch(dq_kernel, {(unsigned)((T + 31) / 32), (unsigned)H, (unsigned)B}, 128, q, ldq, k, ldk, v, ldv,
           (const float *)dout.data(), ldo, (const float *)lse.data(), (const float *)delta.data(),
           (const int *)start.data(), (const int *)end.data(), pa, gq, lq, gk, lk, gv, lv, T, H, KV, D, scale);
    launch(dkdv_kernel, {(unsigned)((T + 31) / 32), (unsigned)KV, (unsigned)B}, 128, q, ldq, k, ldk, v, ldv,
           (const float *)dout.data(), ldo, (const float *)lse.data(), (const float *)delta.data(),
           (const int *)start.data(), (const int *)end.data(), pa, gq, lq, gk, lk, gv, lv, T, H, KV, D, scale);
    compare((tag + " dq dk dv").c_str(), g, gref, 5e-4, 5e-5);
}

template <typename Cached>
static void cached_case(Cached kernel, int Tq, int S, int H, int KV, int D) {
    auto q = randoms(Tq * H * D), kc = randoms(S * KV * D), vc = randoms(S * KV * D);
    std::vector<float> ref(Tq * H * D), o = nans(Tq * H * D);
    const float scale = 1 / std::sqrt((float)D);
    sft_attention_cached_f32(q.data(), kc.data(), vc.data(), ref.data(), Tq, S, H, KV, D, scale, 0, 1);
    launch(kernel, {(unsigned)Tq, (unsigned)H, 1}, 128, (const float *)q.data(), (const float *)kc.data(),
           (const float *)vc.data(), o.data(), Tq, S, H, KV, D, scale);
    compare(("cached Tq=" + std::to_string(Tq) + " S=" + std::to_string(S) + " H=" + std::to_string(H) +
             " KV=" + std::to_string(KV) + " D=" + std::to_string(D)).c_str(), o, ref, 1e-4, 1e-5);
}

static void norm_checks() {
    for (auto [N, C] : {std::pair{5, 33}, {40, 576}, {3, 2048}}) {
        auto x = randoms(N * C, 2), w = randoms(C), b = randoms(C), dy = randoms(N * C), dw0 = randoms(C), db0 = randoms(C);
        std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C);
        unsigned th = std::min(1024, std::max(32, ((C + 3) / 4 + 31) / 32 * 32));
        // rmsnorm
        std::vector<float> y(N * C), r(N), dx(N * C), dw = dw0;
        sft_rmsnorm_fwd_f32(x.data(), w.data(), y.data(), r.data(), N, C, 1e-5f, 0, 1);
        sft_rmsnorm_bwd_f32(dy.data(), x.data(), w.data(), r.data(), dx.data(), dw.data(), N, C, 0, 1);
        auto gy = nans(N * C), gr = nans(N), gdx = nans(N * C), gdw = dw0;
        launch(gpu::sft_rmsnorm_fwd_f32, {(unsigned)N, 1, 1}, th, (const float *)x.data(), (const float *)w.data(),
               gy.data(), gr.data(), (long)N, (long)C, 1e-5f);
        launch(gpu::sft_rmsnorm_bwd_dx_f32, {(unsigned)N, 1, 1}, th, (const float *)dy.data(), (const float *)x.data(),
               (const float *)w.data(), (const float *)gr.data(), gdx.data(), (long)N, (long)C);
        const long slices = std::min((N + 31) / 32, 1024), per = (N + slices - 1) / slices;
        auto pw = nans(slices * C), pb = nans(slices * C);
        launch(gpu::sft_norm_dw_partial_f32, {(unsigned)((C + 255) / 256), (unsigned)slices, 1}, 256,
               (const float *)dy.data(), (const float *)x.data(), (const float *)nullptr, (const float *)gr.data(),
               pw.data(), (float *)nullptr, (long)N, (long)C, per);
        launch(gpu::sft_colsum_add_f32, {(unsigned)((C + 255) / 256), 1, 1}, 256, (const float *)pw.data(), slices,
               (long)C, gdw.data());
        compare(("rmsnorm y rstd dx dw" + tag).c_str(), [&] { auto a = gy; a.insert(a.end(), gr.begin(), gr.end());
                    a.insert(a.end(), gdx.begin(), gdx.end()); a.insert(a.end(), gdw.begin(), gdw.end()); return a; }(),
                [&] { auto a = y; a.insert(a.end(), r.begin(), r.end()); a.insert(a.end(), dx.begin(), dx.end());
                    a.insert(a.end(), dw.begin(), dw.end()); return a; }(), 1e-4, 1e-5);
        // layernorm with bias
        std::vector<float> ly(N * C), mu(N), lr(N), ldx(N * C), ldw = dw0, ldb = db0;
        sft_layernorm_fwd_f32(x.data(), w.data(), b.data(), ly.data(), mu.data(), lr.data(), N, C, 1e-5f, 0, 1);
        sft_layernorm_bwd_f32(dy.data(), x.data(), w.data(), mu.data(), lr.data(), ldx.data(), ldw.data(), ldb.data(), N,
                              C, 0, 1);
        auto gly = nans(N * C), gmu = nans(N), glr = nans(N), gldx = nans(N * C), gldw = dw0, gldb = db0;
        launch(gpu::sft_layernorm_fwd_f32, {(unsigned)N, 1, 1}, th, (const float *)x.data(), (const float *)w.data(),
               (const float *)b.data(), gly.data(), gmu.data(), glr.data(), (long)N, (long)C, 1e-5f);
        launch(gpu::sft_layernorm_bwd_dx_f32, {(unsigned)N, 1, 1}, th, (const float *)dy.data(), (const float *)x.data(),
               (const float *)w.data(), (const float *)gmu.data(), (const float *)glr.data(), gldx.data(), (long)N, (long)C);
        launch(gpu::sft_norm_dw_partial_f32, {(unsigned)((C + 255) / 256), (unsigned)slices, 1}, 256,
               (const float *)dy.data(), (const float *)x.data(), (const float *)gmu.data(), (const float *)glr.data(),
               pw.data(), pb.data(), (long)N, (long)C, per);
        launch(gpu::sft_colsum_add_f32, {(unsigned)((C + 255) / 256), 1, 1}, 256, (const float *)pw.data(), slices,
               (long)C, gldw.data());
        launch(gpu::sft_colsum_add_f32, {(unsigned)((C + 255) / 256), 1, 1}, 256, (const float *)pb.data(), slices,
               (long)C, gldb.data());
        compare(("layernorm y" + tag).c_str(), gly, ly, 1e-4, 1e-5);
        compare(("layernorm mean rstd" + tag).c_str(), [&] { auto a = gmu; a.insert(a.end(), glr.begin(), glr.end()); return a; }(),
                [&] { auto a = mu; a.insert(a.end(), lr.begin(), lr.end()); return a; }(), 1e-4, 1e-5);
        compare(("layernorm dx dw db" + tag).c_str(), [&] { auto a = gldx; a.insert(a.end(), gldw.begin(), gldw.end());
                    a.insert(a.end(), gldb.begin(), gldb.end()); return a; }(),
                [&] { auto a = ldx; a.insert(a.end(), ldw.begin(), ldw.end()); a.insert(a.end(), ldb.begin(), ldb.end());
                    return a; }(), 1e-4, 1e-5);
    }
}

static void other_checks() {
    // rope, strided, forward and inverse
    {
        const int N = 13, H = 3, D = 64, ld = H * D + 8;
        auto x = randoms(N * ld);
        std::vector<int32_t> pos(N);
        for (int i = 0; i < N; i++) pos[i] = (i * 7) % 11;
        std::vector<float> f(D / 2);
        for (int i = 0; i < D / 2; i++) f[i] = std::pow(10000.0f, -2.0f * i / D);
        for (int inv = 0; inv < 2; inv++) {
            std::vector<float> ref(N * H * D);
            auto y = nans(N * H * D);
            sft_rope_f32(x.data(), ld, ref.data(), H * D, pos.data(), f.data(), N, H, D, inv, 0, 1);
            launch(gpu::sft_rope_f32, {4, 1, 1}, 256, (const float *)x.data(), (long)ld, y.data(), (long)(H * D),
                   (const int *)pos.data(), (const float *)f.data(), (long)N, (long)H, (long)D, inv);
            compare(inv ? "rope inverse" : "rope", y, ref, 1e-5, 1e-5);
        }
    }
    // cross-entropy rows (with ignored rows) and the gradient in place
    {
        const int n = 6, V = 1000;
        auto z = randoms(n * V, 4);
        std::vector<int32_t> t = {3, -100, 999, 0, 5000, 17};
        std::vector<float> zr = z, zg = z;
        int64_t count = 0;
        double ref = sft_xent_rows_f32(zr.data(), t.data(), n, V, -100, 0.5f, 1, &count, 0, 1);
        std::vector<double> rows(n, NAN);
        launch(gpu::sft_xent_rows_f32, {(unsigned)n, 1, 1}, 1024, zg.data(), (const int *)t.data(), (long)n, (long)V,
               -100, 0.5f, 1, rows.data());
        double got = 0;
        for (double r : rows) got += r;
        compare("xent rows loss", {(float)got}, {(float)ref}, 1e-5, 1e-6);
        compare("xent rows dlogits", zg, zr, 1e-4, 1e-7);
    }
    // embedding forward and scatter-add backward (repeated ids)
    {
        const int N = 50, C = 40, V = 9;
        std::vector<int32_t> ids(N);
        for (auto &i : ids) i = rng() % V;
        auto table = randoms(V * C), dout = randoms(N * C), dt0 = randoms(V * C);
        std::vector<float> out(N * C), dt = dt0;
        sft_embedding_fwd_f32(ids.data(), table.data(), out.data(), N, C, V);
        sft_embedding_bwd_f32(ids.data(), dout.data(), dt.data(), N, C);
        auto gout = nans(N * C), gdt = dt0;
        int err[4] = {0, 0, 0, 0};
        launch(gpu::sft_embedding_fwd_f32, {(unsigned)N, 1, 1}, 64, (const int *)ids.data(), (const float *)table.data(),
               gout.data(), (long)N, (long)C, (long)V, err);
        launch(gpu::sft_embedding_bwd_f32, {(unsigned)N, 1, 1}, 64, (const int *)ids.data(), (const float *)dout.data(),
               gdt.data(), (long)N, (long)C, (long)V, err);
        compare("embedding fwd", gout, out, 0, 0);
        compare("embedding bwd", gdt, dt, 1e-5, 1e-6);
        ids[7] = V;
        launch(gpu::sft_embedding_fwd_f32, {(unsigned)N, 1, 1}, 64, (const int *)ids.data(), (const float *)table.data(),
               gout.data(), (long)N, (long)C, (long)V, err);
        compare("embedding bad id reported (code, row, id)", {(float)err[0], (float)err[1], (float)err[2]},
                {1.0f, 7.0f, (float)V}, 0, 0);
    }
    // dropout mask and casts: bit-exact with the C kernels
    {
        const int n = 5000;
        auto x = randoms(n, 100);
        std::vector<float> y(n), gy = nans(n);
        std::vector<uint8_t> m(n), gm(n, 7);
        sft_dropout_f32(x.data(), y.data(), m.data(), n, 0.3f, 0x123456789ull, 1ull << 33);
        launch(gpu::sft_dropout_f32, {4, 1, 1}, 256, (const float *)x.data(), gy.data(), gm.data(), (long)n, 0.3f,
               0x123456789ull, 1ull << 33);
        compare("dropout", gy, y, 0, 0);
        compare("dropout mask", std::vector<float>(gm.begin(), gm.end()), std::vector<float>(m.begin(), m.end()), 0, 0);
        std::vector<uint16_t> h(n), gh(n);
        x[0] = NAN; x[1] = INFINITY; x[2] = 3.0e38f;
        sft_f32_to_bf16(x.data(), h.data(), n);
        launch(gpu::sft_cast_f32_bf16, {4, 1, 1}, 256, (const float *)x.data(), (unsigned short *)gh.data(), (long)n);
        compare("cast f32 -> bf16", std::vector<float>(gh.begin(), gh.end()), std::vector<float>(h.begin(), h.end()), 0, 0);
    }
    // f16 casts both ways and across the 16-bit types, against the C conversions
    {
        const int n = 4000;
        auto x = randoms(n, 70000);
        const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, 1e-8f, -3e-6f, 6e-5f, 65519.0f, 65520.0f, 3e38f};
        for (int i = 0; i < 10; i++) x[i] = special[i];
        std::vector<uint16_t> h(n), gh(n), hb(n), ghf(n);
        std::vector<float> back(n), gback = nans(n);
        sft_f32_to_f16(x.data(), h.data(), n);
        launch(gpu::sft_cast_f32_f16, {4, 1, 1}, 256, (const float *)x.data(), (unsigned short *)gh.data(), (long)n);
        compare("cast f32 -> f16", std::vector<float>(gh.begin(), gh.end()), std::vector<float>(h.begin(), h.end()), 0, 0);
        sft_f16_to_f32(h.data(), back.data(), n);
        launch(gpu::sft_cast_f16_f32, {4, 1, 1}, 256, (const unsigned short *)h.data(), gback.data(), (long)n);
        compare("cast f16 -> f32", gback, back, 0, 0);
        sft_f32_to_bf16(back.data(), hb.data(), n);   // f16 -> bf16 is f16 -> f32 -> bf16
        launch(gpu::sft_cast_f16_bf16, {4, 1, 1}, 256, (const unsigned short *)h.data(), (unsigned short *)ghf.data(), (long)n);
        compare("cast f16 -> bf16", std::vector<float>(ghf.begin(), ghf.end()), std::vector<float>(hb.begin(), hb.end()), 0, 0);
        std::vector<float> wide(n);
        std::vector<uint16_t> hf(n);
        sft_bf16_to_f32(hb.data(), wide.data(), n);
        sft_f32_to_f16(wide.data(), hf.data(), n);
        launch(gpu::sft_cast_bf16_f16, {4, 1, 1}, 256, (const unsigned short *)hb.data(), (unsigned short *)ghf.data(), (long)n);
        compare("cast bf16 -> f16", std::vector<float>(ghf.begin(), ghf.end()), std::vector<float>(hf.begin(), hf.end()), 0, 0);
    }
    // bf16 storage kernels: the C kernels on the widened values, rounded to bf16
    {
        const int N = 7, C = 300, n = N * C;
        auto fa = randoms(n, 3), fb = randoms(n, 3), w = randoms(C);
        std::vector<uint16_t> a(n), b(n);
        sft_f32_to_bf16(fa.data(), a.data(), n);
        sft_f32_to_bf16(fb.data(), b.data(), n);
        sft_bf16_to_f32(a.data(), fa.data(), n);
        sft_bf16_to_f32(b.data(), fb.data(), n);
        auto widened = [&](const std::vector<float> &f) {   // f32 -> bf16 -> f32
            std::vector<uint16_t> h(f.size());
            std::vector<float> out(f.size());
            sft_f32_to_bf16(f.data(), h.data(), (int64_t)f.size());
            sft_bf16_to_f32(h.data(), out.data(), (int64_t)f.size());
            return out;
        };
        auto widen = [&](const std::vector<uint16_t> &h) {
            std::vector<float> out(h.size());
            sft_bf16_to_f32(h.data(), out.data(), (int64_t)h.size());
            return out;
        };
        std::vector<float> sum(n), norm(n), rstd(N), swi(n);
        for (int i = 0; i < n; i++) sum[i] = fa[i] + fb[i];
        sft_rmsnorm_fwd_f32(fa.data(), w.data(), norm.data(), rstd.data(), N, C, 1e-5f, 0, 1);
        sft_swiglu_fwd_f32(fa.data(), fb.data(), swi.data(), n);
        std::vector<uint16_t> gs(n), gn(n), gw(n);
        auto gr = nans(N);
        launch(gpu::sft_add_bf16, {4, 1, 1}, 256, (const unsigned short *)a.data(), (const unsigned short *)b.data(),
               (unsigned short *)gs.data(), (long)n);
        launch(gpu::sft_rmsnorm_fwd_bf16, {(unsigned)N, 1, 1}, 96, (const unsigned short *)a.data(), (const float *)w.data(),
               (unsigned short *)gn.data(), gr.data(), (long)N, (long)C, 1e-5f);
        launch(gpu::sft_swiglu_fwd_bf16, {4, 1, 1}, 256, (const unsigned short *)a.data(), (const unsigned short *)b.data(),
               (unsigned short *)gw.data(), (long)n);
        compare("bf16 add", widen(gs), widened(sum), 0, 0);
        compare("bf16 rmsnorm", widen(gn), widened(norm), 8e-3, 1e-6);
        compare("bf16 rmsnorm rstd", gr, rstd, 1e-5, 0);
        compare("bf16 swiglu", widen(gw), widened(swi), 8e-3, 1e-6);
    }
    // row gather / scatter (the LM head's chunks) and the K = 0 GEMM scale
    {
        const int n = 5, C = 7, rowsTotal = 12;
        auto src = randoms(rowsTotal * C);
        std::vector<int32_t> rows = {3, 0, 11, 7, 5};
        auto g = nans(n * C), back = nans(rowsTotal * C);
        std::vector<float> want(n * C), wantBack = back;
        for (int j = 0; j < n; j++)
            for (int c = 0; c < C; c++) { want[j * C + c] = src[rows[j] * C + c]; wantBack[rows[j] * C + c] = want[j * C + c]; }
        launch(gpu::sft_gather_rows_f32, {2, 1, 1}, 32, (const float *)src.data(), (const int *)rows.data(), g.data(),
               (long)n, (long)C);
        launch(gpu::sft_scatter_rows_f32, {2, 1, 1}, 32, (const float *)g.data(), (const int *)rows.data(), back.data(),
               (long)n, (long)C);
        compare("gather rows", g, want, 0, 0);
        std::vector<float> bs(back.size()), ws(back.size());   // NaN rows stay NaN on both sides
        for (size_t i = 0; i < back.size(); i++) { bs[i] = std::isnan(back[i]) ? -1 : back[i]; ws[i] = std::isnan(wantBack[i]) ? -1 : wantBack[i]; }
        compare("scatter rows", bs, ws, 0, 0);
        std::vector<int32_t> ids = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120}, gi(n, -1);
        launch(gpu::sft_gather_i32, {1, 1, 1}, 32, (const int *)ids.data(), (const int *)rows.data(), (int *)gi.data(), (long)n);
        compare("gather i32", std::vector<float>(gi.begin(), gi.end()), {40, 10, 120, 80, 60}, 0, 0);
        // C (2 batches of 3×4, ldc 6, stride 20) *= 0.5, then = 0 with beta 0 (even over NaN)
        auto c = randoms(40);
        std::vector<float> want2 = c;
        for (int b = 0; b < 2; b++) for (int r = 0; r < 3; r++) for (int k = 0; k < 4; k++) want2[b * 20 + r * 6 + k] *= 0.5f;
        launch(gpu::sft_scale_strided_f32, {1, 1, 1}, 64, c.data(), 6L, 20L, 3L, 4L, 2L, 0.5f);
        compare("gemm K=0: C = beta C", c, want2, 0, 0);
        c[0] = NAN;
        for (int b = 0; b < 2; b++) for (int r = 0; r < 3; r++) for (int k = 0; k < 4; k++) want2[b * 20 + r * 6 + k] = 0;
        launch(gpu::sft_scale_strided_f32, {1, 1, 1}, 64, c.data(), 6L, 20L, 3L, 4L, 2L, 0.0f);
        compare("gemm K=0: beta 0 writes zeros", c, want2, 0, 0);
    }
    // sum of squares (two passes in double)
    {
        const int n = 100000;
        auto x = randoms(n);
        std::vector<double> partial(64), total(1);
        launch(gpu::sft_sumsq_f32, {64, 1, 1}, 256, (const float *)x.data(), (long)n, partial.data());
        launch(gpu::sft_sum_f64, {1, 1, 1}, 1024, (const double *)partial.data(), 64L, total.data());
        compare("sumsq", {(float)total[0]}, {(float)sft_sumsq_f32(x.data(), n)}, 1e-6, 0);
    }
    // multi-tensor AdamW against one C call per tensor
    {
        std::vector<long> sizes = {1, 5000, 4096, 9000};
        const long per = 4096;
        std::vector<std::vector<float>> p, g, m, v, p2, m2, v2;
        std::vector<gpu::AdamTensor> list;
        long first = 0;
        for (long n : sizes) {
            p.push_back(randoms(n)); g.push_back(randoms(n)); m.push_back(randoms(n, 0.1f)); v.push_back(randoms(n, 0.01f));
            for (auto &e : v.back()) e = std::fabs(e);
            p2.push_back(p.back()); m2.push_back(m.back()); v2.push_back(v.back());
        }
        for (size_t i = 0; i < sizes.size(); i++) {
            sft_adamw_f32(p[i].data(), g[i].data(), m[i].data(), v[i].data(), sizes[i], 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f,
                          0.271f, 0.003f);
            list.push_back({p2[i].data(), g[i].data(), m2[i].data(), v2[i].data(), sizes[i], first, 0.1f, 0});
            first += (sizes[i] + per - 1) / per;
        }
        launch(gpu::sft_adamw_multi_f32, {(unsigned)first, 1, 1}, 256, (const gpu::AdamTensor *)list.data(),
               (int)list.size(), per, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.271f, 0.003f);
        // m = b1 m + (1-b1) g cancels: a few ulps of the operands (FMA contraction differs
        // between the C and the CUDA source) is the error to allow.
        for (size_t i = 0; i < sizes.size(); i++) {
            compare(("adamw multi tensor " + std::to_string(i) + " p").c_str(), p2[i], p[i], 1e-6, 1e-7);
            compare(("adamw multi tensor " + std::to_string(i) + " m v").c_str(),
                    [&] { auto a = m2[i]; a.insert(a.end(), v2[i].begin(), v2[i].end()); return a; }(),
                    [&] { auto a = m[i]; a.insert(a.end(), v[i].begin(), v[i].end()); return a; }(), 1e-6, 1e-7);
        }
    }
}

int main() {
    using namespace gpu;
    attention_case("attn", sft_attn_fwd_f32_dq4, sft_attn_bwd_dq_f32_dq4, sft_attn_bwd_dkdv_f32_dq4, 1, 1, 1, 1, 16, false, false, false);
    attention_case("attn", sft_attn_fwd_f32_dq16, sft_attn_bwd_dq_f32_dq16, sft_attn_bwd_dkdv_f32_dq16, 2, 77, 4, 2, 64, true, false, false);
    attention_case("attn", sft_attn_fwd_f32_dq24, sft_attn_bwd_dq_f32_dq24, sft_attn_bwd_dkdv_f32_dq24, 1, 70, 2, 1, 80, true, true, true);
    attention_case("attn", sft_attn_fwd_f32_dq8, sft_attn_bwd_dq_f32_dq8, sft_attn_bwd_dkdv_f32_dq8, 2, 45, 6, 3, 32, false, true, false);
    attention_case("attn", sft_attn_fwd_f32_dq32, sft_attn_bwd_dq_f32_dq32, sft_attn_bwd_dkdv_f32_dq32, 1, 40, 2, 2, 128, true, false, true);
    attention_case("attn", sft_attn_fwd_f32_dq64, sft_attn_bwd_dq_f32_dq64, sft_attn_bwd_dkdv_f32_dq64, 1, 33, 2, 1, 200, true, true, false);
    // sliding windows (Mistral, Gemma): shorter than a tile, across tiles, with documents and ALiBi
    attention_case("attn window 5", sft_attn_fwd_f32_dq16, sft_attn_bwd_dq_f32_dq16, sft_attn_bwd_dkdv_f32_dq16, 2, 77, 4, 2, 64, true, false, false, 5);
    attention_case("attn window 40", sft_attn_fwd_f32_dq8, sft_attn_bwd_dq_f32_dq8, sft_attn_bwd_dkdv_f32_dq8, 1, 130, 6, 3, 32, false, true, false, 40);
    // GELU / GeGLU (both forms) and column slices of fused projections
    {
        const int n = 1000;
        auto x = randoms(n), u = randoms(n), dy = randoms(n);
        for (int form = 0; form < 2; form++) {
            for (int gated = 0; gated < 2; gated++) {
                const float *pu = gated ? u.data() : nullptr;
                std::vector<float> y(n), dx(n), du(n), gy = nans(n), gdx = nans(n), gdu = nans(n);
                ::sft_gelu_fwd_f32(x.data(), pu, y.data(), n, form);
                ::sft_gelu_bwd_f32(dy.data(), x.data(), pu, dx.data(), gated ? du.data() : nullptr, n, form);
                launch(gpu::sft_gelu_fwd_f32, {4, 1, 1}, 256, (const float *)x.data(), pu, gy.data(), (long)n, form);
                launch(gpu::sft_gelu_bwd_f32, {4, 1, 1}, 256, (const float *)dy.data(), (const float *)x.data(), pu,
                       gdx.data(), gated ? gdu.data() : (float *)nullptr, (long)n, form);
                std::string tag = std::string("gelu form=") + std::to_string(form) + " gated=" + std::to_string(gated);
                compare((tag + " y").c_str(), gy, y, 1e-5, 1e-6);
                compare((tag + " dx").c_str(), gdx, dx, 1e-5, 1e-6);
                if (gated) compare((tag + " du").c_str(), gdu, du, 1e-5, 1e-6);
            }
        }
        {   // clamp (MPT's clip_qkv)
            std::vector<float> y(n), dx(n), gy = nans(n), gdx = nans(n);
            ::sft_clamp_fwd_f32(x.data(), y.data(), n, 0.5f);
            ::sft_clamp_bwd_f32(dy.data(), x.data(), dx.data(), n, 0.5f);
            launch(gpu::sft_clamp_fwd_f32, {4, 1, 1}, 256, (const float *)x.data(), gy.data(), (long)n, 0.5f);
            launch(gpu::sft_clamp_bwd_f32, {4, 1, 1}, 256, (const float *)dy.data(), (const float *)x.data(), gdx.data(), (long)n, 0.5f);
            compare("clamp y", gy, y, 0, 0);
            compare("clamp dx", gdx, dx, 0, 0);
        }
        const long rows = 9, lds = 23, ldd = 7, from = 5;
        auto src = randoms(rows * lds), dst = nans(rows * ldd);
        std::vector<float> want(rows * ldd);
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < ldd; c++) want[r * ldd + c] = src[r * lds + from + c];
        launch(gpu::sft_copy_columns_f32, {2, 1, 1}, 64, (const float *)src.data() + from, lds, dst.data(), ldd, rows, ldd);
        compare("copy columns", dst, want, 0, 0);
    }
    cached_case(sft_attn_cached_f32_dq16, 1, 1, 2, 1, 64);
    cached_case(sft_attn_cached_f32_dq16, 1, 50, 4, 2, 64);
    cached_case(sft_attn_cached_f32_dq24, 5, 40, 6, 2, 80);
    cached_case(sft_attn_cached_f32_dq32, 3, 100, 2, 2, 128);
    norm_checks();
    other_checks();
    std::printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
