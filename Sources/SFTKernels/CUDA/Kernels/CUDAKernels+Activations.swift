// CUDA C for GELU and GeGLU, exact (erf) and tanh forms, and clamp: the same math as gelu.c
// and clamp.c.

extension CUDAKernels {
    /// GELU / GeGLU and clamp, forward and backward.
    public static let activations = CUDAModuleSource(name: "activations", body: #"""
    // gelu(x) and its slope; tanh form: 0.5 x (1 + tanh(k (x + c x^3))), exact: x Phi(x)
    __device__ __forceinline__ void gelu_and_slope(float x, int tanh_form, float *g, float *s) {
        if (tanh_form) {
            const float k = 0.7978845608028654f, c = 0.044715f;
            const float t = tanhf(k * (x + c * x * x * x));
            *g = 0.5f * x * (1.0f + t);
            *s = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
        } else {
            const float cdf = 0.5f * (1.0f + erff(x * 0.7071067811865476f));
            *g = x * cdf;
            *s = cdf + x * 0.3989422804014327f * expf(-0.5f * x * x);
        }
    }
    // y = gelu(x) (* u when u is given). T: float, or u16 for bf16 x, u and y.
    template <typename T>
    __device__ __forceinline__ void gelu_fwd_body(const T *x, const T *u, T *y, i64 n, int tanh_form) {
        GRID_STRIDE(i, n) {
            float g, s;
            gelu_and_slope(load_act(x, i), tanh_form, &g, &s);
            store_act(y, i, u ? g * load_act(u, i) : g);
        }
    }
    extern "C" __global__ void sft_gelu_fwd_f32(const float *x, const float *u, float *y, i64 n, int tanh_form) {
        gelu_fwd_body(x, u, y, n, tanh_form);
    }
    extern "C" __global__ void sft_gelu_fwd_bf16(const u16 *x, const u16 *u, u16 *y, i64 n, int tanh_form) {
        gelu_fwd_body(x, u, y, n, tanh_form);
    }
    // dx = dy (u) gelu'(x);  du = dy gelu(x). T: the type of x and u; dy, dx, du f32.
    template <typename T>
    __device__ __forceinline__ void gelu_bwd_body(const float *dy, const T *x, const T *u, float *dx, float *du,
                                                  i64 n, int tanh_form) {
        GRID_STRIDE(i, n) {
            float g, s;
            gelu_and_slope(load_act(x, i), tanh_form, &g, &s);
            dx[i] = dy[i] * (u ? load_act(u, i) : 1.0f) * s;
            if (u && du) du[i] = dy[i] * g;
        }
    }
    extern "C" __global__ void sft_gelu_bwd_f32(const float *dy, const float *x, const float *u, float *dx,
                                                float *du, i64 n, int tanh_form) {
        gelu_bwd_body(dy, x, u, dx, du, n, tanh_form);
    }
    extern "C" __global__ void sft_gelu_bwd_bf16(const float *dy, const u16 *x, const u16 *u, float *dx,
                                                 float *du, i64 n, int tanh_form) {
        gelu_bwd_body(dy, x, u, dx, du, n, tanh_form);
    }
    // clamp to [-limit, limit] (MPT's clip_qkv); the gradient passes inside the range only
    extern "C" __global__ void sft_clamp_fwd_f32(const float *x, float *y, i64 n, float limit) {
        GRID_STRIDE(i, n) { y[i] = fminf(fmaxf(x[i], -limit), limit); }
    }
    extern "C" __global__ void sft_clamp_bwd_f32(const float *dy, const float *x, float *dx, i64 n, float limit) {
        GRID_STRIDE(i, n) { dx[i] = x[i] >= -limit && x[i] <= limit ? dy[i] : 0.0f; }
    }
    """#, kernels: ["sft_gelu_fwd_f32(pppli)", "sft_gelu_bwd_f32(pppppli)", "sft_gelu_fwd_bf16(pppli)",
                    "sft_gelu_bwd_bf16(pppppli)", "sft_clamp_fwd_f32(pplf)",
                    "sft_clamp_bwd_f32(ppplf)"])
}
