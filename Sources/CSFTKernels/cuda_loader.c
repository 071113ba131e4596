// Run-time loading of CUDA: the driver API (libcuda.so.1), NVRTC and cuBLASLt are found with
// dlopen and their functions with dlsym, so one build of sft runs on machines with and without
// CUDA (DESIGN.md "CUDA without a build-time toolkit"). No CUDA header is included: the few
// prototypes and constants used are declared in sftkernels.h ("CUDA loader" section), values
// taken from CUDA 13's headers. Also here, because they are mostly CUDA's enum constants: the
// NVRTC compile call and the row-major cuBLASLt GEMM.
#define _GNU_SOURCE
#include "sftkernels.h"
#include <dlfcn.h>
#include <glob.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Symbol tables. X(name, symbol, params, args): `symbol` is what the library exports (CUDA's
// header maps several driver calls to their _v2 ABI), `sft_name` the wrapper declared in the
// header.
// ---------------------------------------------------------------------------------------------

#define DRIVER_FUNCS(X)                                                                        \
    X(cuInit, "cuInit", (unsigned int flags), (flags))                                         \
    X(cuDriverGetVersion, "cuDriverGetVersion", (int *version), (version))                     \
    X(cuGetErrorName, "cuGetErrorName", (sft_CUresult e, const char **s), (e, s))             \
    X(cuGetErrorString, "cuGetErrorString", (sft_CUresult e, const char **s), (e, s))         \
    X(cuDeviceGetCount, "cuDeviceGetCount", (int *count), (count))                             \
    X(cuDeviceGet, "cuDeviceGet", (sft_CUdevice *d, int ordinal), (d, ordinal))                \
    X(cuDeviceGetName, "cuDeviceGetName", (char *name, int len, sft_CUdevice d), (name, len, d)) \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *v, int attribute, sft_CUdevice d),   \
      (v, attribute, d))                                                                       \
    X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *bytes, sft_CUdevice d), (bytes, d))    \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (sft_CUcontext *c, sft_CUdevice d), \
      (c, d))                                                                                  \
    X(cuCtxSetCurrent, "cuCtxSetCurrent", (sft_CUcontext c), (c))                              \
    X(cuMemGetInfo, "cuMemGetInfo_v2", (size_t *free_bytes, size_t *total_bytes),              \
      (free_bytes, total_bytes))                                                               \
    X(cuMemAlloc, "cuMemAlloc_v2", (sft_CUdeviceptr *p, size_t bytes), (p, bytes))             \
    X(cuMemFree, "cuMemFree_v2", (sft_CUdeviceptr p), (p))                                     \
    X(cuMemAllocHost, "cuMemAllocHost_v2", (void **p, size_t bytes), (p, bytes))               \
    X(cuMemFreeHost, "cuMemFreeHost", (void *p), (p))                                          \
    X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2",                                               \
      (sft_CUdeviceptr dst, const void *src, size_t n, sft_CUstream s), (dst, src, n, s))      \
    X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2",                                               \
      (void *dst, sft_CUdeviceptr src, size_t n, sft_CUstream s), (dst, src, n, s))            \
    X(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2",                                               \
      (sft_CUdeviceptr dst, sft_CUdeviceptr src, size_t n, sft_CUstream s), (dst, src, n, s))  \
    X(cuMemsetD8Async, "cuMemsetD8Async",                                                      \
      (sft_CUdeviceptr dst, unsigned char v, size_t n, sft_CUstream s), (dst, v, n, s))        \
    X(cuMemsetD32Async, "cuMemsetD32Async",                                                    \
      (sft_CUdeviceptr dst, unsigned int v, size_t n, sft_CUstream s), (dst, v, n, s))         \
    X(cuStreamCreate, "cuStreamCreate", (sft_CUstream *s, unsigned int flags), (s, flags))     \
    X(cuStreamSynchronize, "cuStreamSynchronize", (sft_CUstream s), (s))                       \
    X(cuEventCreate, "cuEventCreate", (sft_CUevent *e, unsigned int flags), (e, flags))        \
    X(cuEventRecord, "cuEventRecord", (sft_CUevent e, sft_CUstream s), (e, s))                 \
    X(cuEventQuery, "cuEventQuery", (sft_CUevent e), (e))                                      \
    X(cuEventSynchronize, "cuEventSynchronize", (sft_CUevent e), (e))                          \
    X(cuModuleLoadData, "cuModuleLoadData", (sft_CUmodule *m, const void *image), (m, image))  \
    X(cuModuleGetFunction, "cuModuleGetFunction",                                              \
      (sft_CUfunction *f, sft_CUmodule m, const char *name), (f, m, name))                     \
    X(cuFuncSetAttribute, "cuFuncSetAttribute", (sft_CUfunction f, int attribute, int value),  \
      (f, attribute, value))                                                                   \
    X(cuLaunchKernel, "cuLaunchKernel",                                                        \
      (sft_CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,   \
       unsigned int by, unsigned int bz, unsigned int smem, sft_CUstream s, void **params,     \
       void **extra),                                                                          \
      (f, gx, gy, gz, bx, by, bz, smem, s, params, extra))

#define DECLARE_DRIVER(name, symbol, params, args)                                             \
    static sft_CUresult(*p_##name) params;                                                     \
    sft_CUresult sft_##name params { return p_##name ? p_##name args : SFT_CUDA_NOT_LOADED; }
DRIVER_FUNCS(DECLARE_DRIVER)

typedef struct nvrtc_program *nvrtc_program;
static int (*p_nvrtcVersion)(int *, int *);
static int (*p_nvrtcCreateProgram)(nvrtc_program *, const char *, const char *, int,
                                   const char *const *, const char *const *);
static int (*p_nvrtcCompileProgram)(nvrtc_program, int, const char *const *);
static int (*p_nvrtcGetProgramLogSize)(nvrtc_program, size_t *);
static int (*p_nvrtcGetProgramLog)(nvrtc_program, char *);
static int (*p_nvrtcGetCUBINSize)(nvrtc_program, size_t *);
static int (*p_nvrtcGetCUBIN)(nvrtc_program, char *);
static int (*p_nvrtcGetPTXSize)(nvrtc_program, size_t *);
static int (*p_nvrtcGetPTX)(nvrtc_program, char *);
static int (*p_nvrtcDestroyProgram)(nvrtc_program *);
static const char *(*p_nvrtcGetErrorString)(int);

// cuBLASLt: descriptors are opaque pointers; the heuristic result is a small public struct.
typedef struct { uint64_t data[8]; } lt_algo;
typedef struct {
    lt_algo algo;
    size_t workspace_size;
    int state;
    float waves_count;
    int reserved[4];
} lt_heuristic;
static int (*p_cublasLtCreate)(void **);
static int (*p_cublasLtDestroy)(void *);
static size_t (*p_cublasLtGetVersion)(void);
static const char *(*p_cublasLtGetStatusName)(int);
static int (*p_cublasLtMatmulDescCreate)(void **, int, int);
static int (*p_cublasLtMatmulDescDestroy)(void *);
static int (*p_cublasLtMatmulDescSetAttribute)(void *, int, const void *, size_t);
static int (*p_cublasLtMatrixLayoutCreate)(void **, int, uint64_t, uint64_t, int64_t);
static int (*p_cublasLtMatrixLayoutDestroy)(void *);
static int (*p_cublasLtMatrixLayoutSetAttribute)(void *, int, const void *, size_t);
static int (*p_cublasLtMatmulPreferenceCreate)(void **);
static int (*p_cublasLtMatmulPreferenceDestroy)(void *);
static int (*p_cublasLtMatmulPreferenceSetAttribute)(void *, int, const void *, size_t);
static int (*p_cublasLtMatmulAlgoGetHeuristic)(void *, void *, void *, void *, void *, void *,
                                               void *, int, lt_heuristic *, int *);
static int (*p_cublasLtMatmul)(void *, void *, const void *, const void *, void *, const void *,
                               void *, const void *, const void *, void *, void *, void *,
                               const lt_algo *, void *, size_t, sft_CUstream);

typedef struct {
    const char *symbol;
    void **slot;
} symbol_t;

#define DRIVER_SYMBOL(name, symbol, params, args) {symbol, (void **)&p_##name},
static const symbol_t driver_symbols[] = {DRIVER_FUNCS(DRIVER_SYMBOL){NULL, NULL}};
#define SYM(name) {#name, (void **)&p_##name}
static const symbol_t nvrtc_symbols[] = {
    SYM(nvrtcVersion), SYM(nvrtcCreateProgram), SYM(nvrtcCompileProgram),
    SYM(nvrtcGetProgramLogSize), SYM(nvrtcGetProgramLog), SYM(nvrtcGetCUBINSize),
    SYM(nvrtcGetCUBIN), SYM(nvrtcGetPTXSize), SYM(nvrtcGetPTX), SYM(nvrtcDestroyProgram),
    SYM(nvrtcGetErrorString), {NULL, NULL}};
static const symbol_t cublaslt_symbols[] = {
    SYM(cublasLtCreate), SYM(cublasLtDestroy), SYM(cublasLtGetVersion),
    SYM(cublasLtGetStatusName), SYM(cublasLtMatmulDescCreate), SYM(cublasLtMatmulDescDestroy),
    SYM(cublasLtMatmulDescSetAttribute), SYM(cublasLtMatrixLayoutCreate),
    SYM(cublasLtMatrixLayoutDestroy), SYM(cublasLtMatrixLayoutSetAttribute),
    SYM(cublasLtMatmulPreferenceCreate), SYM(cublasLtMatmulPreferenceDestroy),
    SYM(cublasLtMatmulPreferenceSetAttribute), SYM(cublasLtMatmulAlgoGetHeuristic),
    SYM(cublasLtMatmul), {NULL, NULL}};

// ---------------------------------------------------------------------------------------------
// Where each library is searched
// ---------------------------------------------------------------------------------------------

typedef struct {
    const char *display;          // the name reports use
    const char *pattern;          // file name (glob) inside a directory
    const char *loader_names[4];  // names handed to dlopen as they are (the loader's path)
    const char *wheel_dirs[3];    // folders under site-packages of NVIDIA's PyPI wheels
    const symbol_t *symbols;
} lib_spec;

static const lib_spec specs[SFT_CUDA_LIB_COUNT] = {
    {"libcuda.so.1", "libcuda.so.1", {"libcuda.so.1", NULL}, {NULL}, driver_symbols},
    {"libnvrtc.so*", "libnvrtc.so*", {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", NULL},
     {"nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", NULL}, nvrtc_symbols},
    {"libcublasLt.so*", "libcublasLt.so*",
     {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", NULL},
     {"nvidia/cu13/lib", "nvidia/cublas/lib", NULL}, cublaslt_symbols},
};

/// Python prefixes whose site-packages may hold NVIDIA's wheels ($NAME: an environment
/// variable, skipped when unset).
static const char *const site_packages[] = {
    "$VIRTUAL_ENV/lib/python3*/site-packages",
    "$CONDA_PREFIX/lib/python3*/site-packages",
    "$HOME/.local/lib/python3*/site-packages",
    "$HOME/.pyenv/versions/*/lib/python3*/site-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/usr/local/lib/python3*/site-packages",
    "/usr/lib/python3/dist-packages",
    "/opt/conda/lib/python3*/site-packages",
    NULL,
};

typedef struct {
    char *path, *tried;
    size_t path_cap, tried_cap;
    void *handle;
} search_t;

/// Appends "text" to the "; "-separated list of places tried (truncated when full).
static void note(search_t *s, const char *fmt, ...) {
    size_t used = strlen(s->tried);
    if (used + 4 >= s->tried_cap) return;
    if (used) { strcpy(s->tried + used, "; "); used += 2; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->tried + used, s->tried_cap - used, fmt, ap);
    va_end(ap);
}

/// Opens one candidate file (or bare name) and checks it exports every symbol used; on success
/// keeps the handle and its path, else notes why it was rejected.
static int try_open(search_t *s, const lib_spec *spec, int lib, const char *file) {
    dlerror();
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        // A bare name the loader cannot find is the common case: keep the note short.
        if (!strchr(file, '/') && e && strstr(e, "cannot open shared object file"))
            note(s, "%s (not on the loader path)", file);
        else
            note(s, "%s (%s)", file, e ? e : "dlopen failed");
        return -1;
    }
    for (const symbol_t *sym = spec->symbols; sym->symbol; sym++) {
        if (!dlsym(h, sym->symbol)) {
            note(s, "%s (no symbol %s: too old?)", file, sym->symbol);
            dlclose(h);
            return -1;
        }
    }
    char origin[4096] = "";
    if (!strchr(file, '/') && dlinfo(h, RTLD_DI_ORIGIN, origin) == 0) {
        snprintf(s->path, s->path_cap, "%s/%s", origin, file);
    } else {
        snprintf(s->path, s->path_cap, "%s", file);
        char *slash = strrchr(file, '/');
        size_t n = slash ? (size_t)(slash - file) : 0;
        if (n >= sizeof origin) n = sizeof origin - 1;
        memcpy(origin, file, n);
        origin[n] = 0;
    }
    if (lib == SFT_CUDA_LIB_NVRTC) {
        // NVRTC opens libnvrtc-builtins.so.* from its own folder only when compiling: check
        // now so a missing file is reported here rather than as a failed compile later.
        char pattern[4200];
        snprintf(pattern, sizeof pattern, "%s/libnvrtc-builtins.so*", origin);
        glob_t g;
        int found = glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0;
        if (found) globfree(&g);
        if (!found && origin[0]) {
            note(s, "%s (libnvrtc-builtins.so.* is missing beside it)", file);
            s->path[0] = 0;
            dlclose(h);
            return -1;
        }
    }
    s->handle = h;
    return 0;
}

/// Tries every file matching the library's pattern in `dir`, newest version first.
static int try_dir(search_t *s, const lib_spec *spec, int lib, const char *dir) {
    if (!dir || !dir[0]) return -1;
    char pattern[4200];
    snprintf(pattern, sizeof pattern, "%s/%s", dir, spec->pattern);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        note(s, "%s (no such file)", pattern);
        return -1;
    }
    int ok = -1;
    for (size_t i = g.gl_pathc; i-- > 0 && ok != 0;) ok = try_open(s, spec, lib, g.gl_pathv[i]);
    globfree(&g);
    return ok;
}

/// Expands a leading $NAME of a site-packages pattern; 0 when NAME is unset.
static int expand(const char *pattern, char *out, size_t cap) {
    if (pattern[0] != '$') { snprintf(out, cap, "%s", pattern); return 1; }
    const char *slash = strchr(pattern, '/');
    char name[64];
    size_t n = (size_t)(slash - pattern - 1);
    if (n >= sizeof name) return 0;
    memcpy(name, pattern + 1, n);
    name[n] = 0;
    const char *value = getenv(name);
    if (!value || !value[0]) return 0;
    snprintf(out, cap, "%s%s", value, slash);
    return 1;
}

static int search_spec(const lib_spec *spec, int lib, const char *dirs, int defaults, search_t *s) {
    s->path[0] = 0;
    s->tried[0] = 0;
    s->handle = NULL;
    if (dirs) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", dirs);
        for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save))
            if (try_dir(s, spec, lib, d) == 0) return 0;
    }
    if (!defaults) return -1;
    char dir[4096];
    const char *homes[] = {"CUDA_HOME", "CUDA_PATH"};
    for (int i = 0; i < 2; i++) {
        const char *home = getenv(homes[i]);
        if (!home || !home[0]) continue;
        snprintf(dir, sizeof dir, "%s/lib64", home);
        if (try_dir(s, spec, lib, dir) == 0) return 0;
    }
    if (try_dir(s, spec, lib, "/usr/local/cuda/lib64") == 0) return 0;
    for (int i = 0; spec->loader_names[i]; i++)
        if (try_open(s, spec, lib, spec->loader_names[i]) == 0) return 0;
    for (int w = 0; spec->wheel_dirs[w]; w++) {
        for (int p = 0; site_packages[p]; p++) {
            char base[2048], pattern[4096];
            if (!expand(site_packages[p], base, sizeof base)) continue;
            snprintf(pattern, sizeof pattern, "%s/%s", base, spec->wheel_dirs[w]);
            glob_t g;
            if (glob(pattern, GLOB_ONLYDIR, NULL, &g) != 0 || g.gl_pathc == 0) {
                note(s, "%s/%s (no such folder)", site_packages[p], spec->wheel_dirs[w]);
                continue;
            }
            int ok = -1;
            for (size_t i = g.gl_pathc; i-- > 0 && ok != 0;) ok = try_dir(s, spec, lib, g.gl_pathv[i]);
            globfree(&g);
            if (ok == 0) return 0;
        }
    }
    return -1;
}

static int search(int lib, const char *dirs, int defaults, search_t *s) {
    return search_spec(&specs[lib], lib, dirs, defaults, s);
}

void *sft_cuda_open_library(const char *pattern, const char *const *loader_names,
                            const char *const *wheel_dirs, const char *const *symbols, char *path,
                            size_t path_cap, char *tried, size_t tried_cap) {
    enum { MAX = 32 };
    lib_spec spec = {pattern, pattern, {NULL}, {NULL}, NULL};
    for (int i = 0; i < 3 && loader_names[i]; i++) spec.loader_names[i] = loader_names[i];
    for (int i = 0; i < 2 && wheel_dirs[i]; i++) spec.wheel_dirs[i] = wheel_dirs[i];
    symbol_t syms[MAX + 1];
    void *unused = NULL;
    int n = 0;
    for (; n < MAX && symbols[n]; n++) syms[n] = (symbol_t){symbols[n], &unused};
    syms[n] = (symbol_t){NULL, NULL};
    spec.symbols = syms;
    search_t s = {path, tried, path_cap, tried_cap, NULL};
    return search_spec(&spec, -1, getenv("SFT_CUDA_LIBS"), 1, &s) == 0 ? s.handle : NULL;
}

// ---------------------------------------------------------------------------------------------
// Process-wide state
// ---------------------------------------------------------------------------------------------

typedef struct {
    char path[4096], tried[8192], error[1024];
    void *handle;
} lib_state;

static lib_state state[SFT_CUDA_LIB_COUNT];
static int loaded_mask;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load_all(void) {
    const char *dirs = getenv("SFT_CUDA_LIBS");
    for (int lib = 0; lib < SFT_CUDA_LIB_COUNT; lib++) {
        lib_state *st = &state[lib];
        search_t s = {st->path, st->tried, sizeof st->path, sizeof st->tried, NULL};
        if (search(lib, dirs, 1, &s) != 0) {
            snprintf(st->error, sizeof st->error, "%s not found", specs[lib].display);
            continue;
        }
        st->handle = s.handle;
        for (const symbol_t *sym = specs[lib].symbols; sym->symbol; sym++)
            *sym->slot = dlsym(s.handle, sym->symbol);
        loaded_mask |= 1 << lib;
    }
}

int sft_cuda_load(void) {
    pthread_once(&load_once, load_all);
    return loaded_mask;
}

static const lib_state *lib_at(int lib) {
    sft_cuda_load();
    return lib >= 0 && lib < SFT_CUDA_LIB_COUNT ? &state[lib] : NULL;
}

const char *sft_cuda_lib_path(int lib) { return lib_at(lib) ? lib_at(lib)->path : ""; }
const char *sft_cuda_lib_tried(int lib) { return lib_at(lib) ? lib_at(lib)->tried : ""; }
const char *sft_cuda_lib_error(int lib) { return lib_at(lib) ? lib_at(lib)->error : "no such library"; }
const char *sft_cuda_emulation(int lib) {
    // The emulated libraries (tools/cuda-emulate) export this; NVIDIA's do not.
    if (lib < 0 || lib >= SFT_CUDA_LIB_COUNT || !(sft_cuda_load() & (1 << lib))) return NULL;
    const char *(*describe)(void) = (const char *(*)(void))dlsym(state[lib].handle, "sft_emulated_gpu");
    return describe ? describe() : NULL;
}

const char *sft_cuda_lib_name(int lib) {
    return lib >= 0 && lib < SFT_CUDA_LIB_COUNT ? specs[lib].display : "";
}

int sft_cuda_probe(int lib, const char *dirs, int defaults, char *path, size_t path_cap,
                   char *tried, size_t tried_cap) {
    if (lib < 0 || lib >= SFT_CUDA_LIB_COUNT || !path || !tried || !path_cap || !tried_cap)
        return sft_set_error("sft_cuda_probe: bad arguments");
    search_t s = {path, tried, path_cap, tried_cap, NULL};
    if (search(lib, dirs, defaults, &s) != 0) return -1;
    dlclose(s.handle);
    return 0;
}

void sft_cuda_free(void *p) { free(p); }

// ---------------------------------------------------------------------------------------------
// NVRTC
// ---------------------------------------------------------------------------------------------

int sft_nvrtc_version(int *major, int *minor) {
    sft_cuda_load();
    if (!p_nvrtcVersion) return -1;
    return p_nvrtcVersion(major, minor);
}

int sft_nvrtc_compile(const char *source, const char *name, const char *const *options,
                      int noptions, int cubin, void **image, size_t *image_size, char **log) {
    *image = NULL;
    *image_size = 0;
    if (log) *log = NULL;
    if (!(sft_cuda_load() & (1 << SFT_CUDA_LIB_NVRTC)))
        return sft_set_error("NVRTC is not loaded: %s (tried %s)", state[SFT_CUDA_LIB_NVRTC].error,
                             state[SFT_CUDA_LIB_NVRTC].tried);
    nvrtc_program prog = NULL;
    int r = p_nvrtcCreateProgram(&prog, source, name, 0, NULL, NULL);
    if (r != 0) return sft_set_error("nvrtcCreateProgram(%s): %s", name, p_nvrtcGetErrorString(r));
    r = p_nvrtcCompileProgram(prog, noptions, options);
    size_t n = 0;
    if (log && p_nvrtcGetProgramLogSize(prog, &n) == 0 && n > 1 && (*log = malloc(n)))
        p_nvrtcGetProgramLog(prog, *log);
    if (r != 0) {
        p_nvrtcDestroyProgram(&prog);
        return sft_set_error("NVRTC could not compile %s: %s", name, p_nvrtcGetErrorString(r));
    }
    size_t size = 0;
    r = cubin ? p_nvrtcGetCUBINSize(prog, &size) : p_nvrtcGetPTXSize(prog, &size);
    char *out = r == 0 && size > 0 ? malloc(size) : NULL;
    if (out) r = cubin ? p_nvrtcGetCUBIN(prog, out) : p_nvrtcGetPTX(prog, out);
    p_nvrtcDestroyProgram(&prog);
    if (!out || r != 0) {
        free(out);
        return sft_set_error("NVRTC gave no %s for %s (%s; was a real sm_XX architecture named?)",
                             cubin ? "CUBIN" : "PTX", name, r ? p_nvrtcGetErrorString(r) : "empty");
    }
    *image = out;
    *image_size = size;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// cuBLASLt
// ---------------------------------------------------------------------------------------------

// Enum values from CUDA 13's cublasLt.h / cublas_api.h.
enum {
    LT_COMPUTE_32F = 68, LT_COMPUTE_32F_FAST_TF32 = 77,
    LT_DESC_TRANSA = 3, LT_DESC_TRANSB = 4,
    LT_LAYOUT_BATCH_COUNT = 5, LT_LAYOUT_STRIDED_BATCH_OFFSET = 6,
    LT_PREF_MAX_WORKSPACE_BYTES = 1,
    LT_PREF_MIN_ALIGNMENT_A = 5, LT_PREF_MIN_ALIGNMENT_B = 6, LT_PREF_MIN_ALIGNMENT_C = 7,
    LT_PREF_MIN_ALIGNMENT_D = 8,
};

int sft_cublaslt_create(void **handle) {
    sft_cuda_load();
    return p_cublasLtCreate ? p_cublasLtCreate(handle) : SFT_CUDA_NOT_LOADED;
}

int sft_cublaslt_destroy(void *handle) {
    return p_cublasLtDestroy ? p_cublasLtDestroy(handle) : SFT_CUDA_NOT_LOADED;
}

size_t sft_cublaslt_version(void) {
    sft_cuda_load();
    return p_cublasLtGetVersion ? p_cublasLtGetVersion() : 0;
}

/// Largest power of two (up to 256) dividing a device address: what cuBLASLt may assume.
static uint32_t alignment_of(sft_CUdeviceptr p) {
    uint32_t a = 256;
    while (a > 1 && p % a) a /= 2;
    return a;
}

int sft_cublaslt_gemm(void *handle, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                      float alpha, sft_CUdeviceptr A, int a_type, int64_t lda, int64_t stride_a,
                      sft_CUdeviceptr B, int b_type, int64_t ldb, int64_t stride_b, float beta,
                      sft_CUdeviceptr C, int c_type, int64_t ldc, int64_t stride_c, int64_t batch,
                      int tf32, sft_CUdeviceptr workspace, size_t workspace_bytes,
                      sft_CUstream stream) {
    if (!p_cublasLtMatmul) return sft_set_error("cuBLASLt is not loaded");
    // cuBLASLt is column-major: a row-major (rows × cols, ld) matrix is its transpose there.
    // So compute C^T (N × M) = op(B)^T op(A)^T: B's memory is the first operand (with B's
    // transpose flag), A's the second. Layouts give the stored shape in column-major terms.
    void *desc = NULL, *la = NULL, *lb = NULL, *lc = NULL, *pref = NULL;
    const char *what = "";
    int st = 0;
#define LT(call)                                                                               \
    do {                                                                                       \
        what = #call;                                                                          \
        if ((st = (call)) != 0) goto done;                                                     \
    } while (0)
    const int compute = tf32 && a_type == SFT_CUDA_R_32F && b_type == SFT_CUDA_R_32F
                            ? LT_COMPUTE_32F_FAST_TF32 : LT_COMPUTE_32F;
    const int32_t op_first = trans_b ? 1 : 0, op_second = trans_a ? 1 : 0;
    LT(p_cublasLtMatmulDescCreate(&desc, compute, SFT_CUDA_R_32F));
    LT(p_cublasLtMatmulDescSetAttribute(desc, LT_DESC_TRANSA, &op_first, sizeof op_first));
    LT(p_cublasLtMatmulDescSetAttribute(desc, LT_DESC_TRANSB, &op_second, sizeof op_second));
    LT(p_cublasLtMatrixLayoutCreate(&la, b_type, (uint64_t)(trans_b ? K : N),
                                    (uint64_t)(trans_b ? N : K), ldb));
    LT(p_cublasLtMatrixLayoutCreate(&lb, a_type, (uint64_t)(trans_a ? M : K),
                                    (uint64_t)(trans_a ? K : M), lda));
    LT(p_cublasLtMatrixLayoutCreate(&lc, c_type, (uint64_t)N, (uint64_t)M, ldc));
    if (batch > 1) {
        const int32_t count = (int32_t)batch;
        void *layouts[3] = {la, lb, lc};
        const int64_t strides[3] = {stride_b, stride_a, stride_c};
        for (int i = 0; i < 3; i++) {
            LT(p_cublasLtMatrixLayoutSetAttribute(layouts[i], LT_LAYOUT_BATCH_COUNT, &count, sizeof count));
            LT(p_cublasLtMatrixLayoutSetAttribute(layouts[i], LT_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &strides[i], sizeof strides[i]));
        }
    }
    LT(p_cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_bytes;
    LT(p_cublasLtMatmulPreferenceSetAttribute(pref, LT_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const uint32_t align[4] = {alignment_of(B), alignment_of(A), alignment_of(C), alignment_of(C)};
    const int align_attr[4] = {LT_PREF_MIN_ALIGNMENT_A, LT_PREF_MIN_ALIGNMENT_B,
                               LT_PREF_MIN_ALIGNMENT_C, LT_PREF_MIN_ALIGNMENT_D};
    for (int i = 0; i < 4; i++)
        LT(p_cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align[i], sizeof align[i]));
    lt_heuristic heuristic;
    int found = 0;
    memset(&heuristic, 0, sizeof heuristic);
    LT(p_cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, pref, 1, &heuristic, &found));
    if (found < 1) {
        what = "cublasLtMatmulAlgoGetHeuristic (no algorithm for this shape and alignment)";
        st = -1;
        goto done;
    }
    LT(p_cublasLtMatmul(handle, desc, &alpha, (const void *)(uintptr_t)B, la,
                        (const void *)(uintptr_t)A, lb, &beta, (const void *)(uintptr_t)C, lc,
                        (void *)(uintptr_t)C, lc, &heuristic.algo, (void *)(uintptr_t)workspace,
                        workspace_bytes, stream));
#undef LT
done:
    if (pref) p_cublasLtMatmulPreferenceDestroy(pref);
    if (lc) p_cublasLtMatrixLayoutDestroy(lc);
    if (lb) p_cublasLtMatrixLayoutDestroy(lb);
    if (la) p_cublasLtMatrixLayoutDestroy(la);
    if (desc) p_cublasLtMatmulDescDestroy(desc);
    if (st != 0) {
        const char *name = st > 0 && p_cublasLtGetStatusName ? p_cublasLtGetStatusName(st) : "";
        return sft_set_error("cuBLASLt gemm M=%lld N=%lld K=%lld batch=%lld: %s failed (%d %s)",
                             (long long)M, (long long)N, (long long)K, (long long)batch, what, st,
                             name);
    }
    return 0;
}
