// The emulated CUDA driver (libcuda.so.1): the driver API calls sft's loader resolves
// (Sources/CSFTKernels/cuda_loader.c, DRIVER_FUNCS), on the CPU.
//
// - One device, "sft emulated GPU (CPU)", compute capability 9.0.
// - Device memory is a region of address space apart from host memory (reserved with
//   PROT_NONE). Each allocation is made readable and writable, filled with 0xFF bytes (NaN as
//   f32/bf16/f16), and followed by an inaccessible guard page; freed memory is inaccessible
//   again. A copy, memset or kernel pointer argument that is host memory, or not inside one
//   live allocation, fails with CUDA_ERROR_INVALID_VALUE; cuGetErrorString then returns the
//   detail (which op, which argument, which address).
// - Streams run synchronously: every call has finished when it returns; events are always done.
// - Modules are the emulated NVRTC's images (compile.h); a launch calls the module's entry for
//   the kernel (emu_kernel.h), which runs the grid block by block, threads as fibers.
// - A kernel that touches memory it may not (a guard page, freed memory, a stray address) is a
//   segmentation fault: the handler prints which kernel was running before the process dies.
#include <dlfcn.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>

#include "compile.h"
#include "emu_abi.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum : CUresult {
    SUCCESS = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, INVALID_DEVICE = 101,
    INVALID_IMAGE = 200, INVALID_CONTEXT = 201, INVALID_HANDLE = 400, NOT_FOUND = 500,
    LAUNCH_OUT_OF_RESOURCES = 701, NOT_SUPPORTED = 801, LAUNCH_FAILED = 719,
};

namespace {

struct ErrorName {
    CUresult code;
    const char *name, *text;
};
const ErrorName kErrors[] = {
    {SUCCESS, "CUDA_SUCCESS", "no error"},
    {INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
};

// The detail of the last error on this thread: cuGetErrorString returns it for that code.
thread_local CUresult last_code = SUCCESS;
thread_local std::string last_detail;

CUresult fail(CUresult code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
CUresult fail(CUresult code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    last_code = code;
    last_detail = std::string("sft emulated GPU: ") + buf;
    return code;
}

bool initialized = false;
int context_tag, stream_tag, event_tag;  // addresses used as the opaque handles

// ---------------------------------------------------------------------------------------------
// Device memory
// ---------------------------------------------------------------------------------------------

constexpr size_t kPage = 4096;
constexpr size_t kRegionBytes = size_t(64) << 30;   // address space reserved for device memory
constexpr size_t kDeviceBytes = size_t(16) << 30;   // what the device reports as its memory

struct Memory {
    std::mutex lock;
    char *base = nullptr;
    std::map<uintptr_t, size_t> live;  // address -> bytes asked
    std::map<size_t, size_t> free_ranges;  // region offset -> bytes (pages, guards included)
    size_t used = 0;

    bool reserve() {
        if (base) return true;
        void *p = mmap(nullptr, kRegionBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        base = (char *)p;
        free_ranges[0] = kRegionBytes;
        return true;
    }
    bool in_region(uintptr_t p) const { return base && p >= (uintptr_t)base && p < (uintptr_t)base + kRegionBytes; }
    static size_t span(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage + kPage; }

    /// 0 when [p, p + n) lies in one live allocation (n = 0: p may be its end); otherwise nonzero
    /// with the reason in `why`.
    int check(uintptr_t p, size_t n, char *why, size_t cap) {
        std::lock_guard<std::mutex> g(lock);
        if (!in_region(p)) {
            snprintf(why, cap, "address 0x%llx is host memory, not device memory (a missing upload?)", (unsigned long long)p);
            return 1;
        }
        auto it = live.upper_bound(p);
        if (it == live.begin()) {
            snprintf(why, cap, "address 0x%llx is in no live device allocation (freed?)", (unsigned long long)p);
            return 2;
        }
        --it;
        const uintptr_t end = it->first + it->second;
        if (p > end || (p == end && n > 0)) {
            snprintf(why, cap, "address 0x%llx is in no live device allocation (freed, or past the end of the %zu-byte allocation at 0x%llx)",
                     (unsigned long long)p, it->second, (unsigned long long)it->first);
            return 2;
        }
        if (p + n > end) {
            snprintf(why, cap, "%zu bytes at 0x%llx run past the end of the %zu-byte allocation at 0x%llx", n,
                     (unsigned long long)p, it->second, (unsigned long long)it->first);
            return 3;
        }
        return 0;
    }
};
Memory memory;

CUresult check_range(const char *op, const char *arg, CUdeviceptr p, size_t n) {
    char why[512];
    if (memory.check((uintptr_t)p, n, why, sizeof why) != 0) return fail(INVALID_VALUE, "%s %s: %s", op, arg, why);
    return SUCCESS;
}

CUresult check_host(const char *op, const char *arg, const void *p, size_t n) {
    if (n && !p) return fail(INVALID_VALUE, "%s %s: NULL host pointer", op, arg);
    std::lock_guard<std::mutex> g(memory.lock);
    if (memory.in_region((uintptr_t)p))
        return fail(INVALID_VALUE, "%s %s: address %p is device memory where host memory was expected", op, arg, p);
    return SUCCESS;
}

// ---------------------------------------------------------------------------------------------
// Modules and launches
// ---------------------------------------------------------------------------------------------

struct Module {
    void *handle;
};
struct Function {
    int (*entry)(const emu_launch *);
    std::string name;
    int max_dynamic_shared = 48 << 10;
};
std::mutex launch_lock;  // one launch at a time: kernels share the module's block state
thread_local const char *running_kernel = nullptr;
struct sigaction previous_segv, previous_bus;

void on_fault(int sig, siginfo_t *info, void *uc) {
    if (running_kernel) {
        char buf[512];
        const uintptr_t a = (uintptr_t)info->si_addr;
        const int n = snprintf(buf, sizeof buf,
                               "sft emulated GPU: kernel %s touched address 0x%llx, %s\n", running_kernel,
                               (unsigned long long)a,
                               memory.in_region(a) ? "device memory outside every live allocation (out of bounds, or freed)"
                                                   : "which is not device memory");
        if (n > 0) (void)!write(2, buf, (size_t)n);
    }
    struct sigaction &prev = sig == SIGSEGV ? previous_segv : previous_bus;
    if (prev.sa_flags & SA_SIGINFO && prev.sa_sigaction) {
        prev.sa_sigaction(sig, info, uc);
    } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
        prev.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
        sigaction(SIGBUS, &sa, &previous_bus);
    });
}

int check_kernel_pointer(void *, const void *p, int, char *why, size_t cap) {
    if (!p) return 0;
    return memory.check((uintptr_t)p, 0, why, cap);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

/// What sft's loader reports when this library is the driver (`sftctl inspect --devices`).
EXPORT const char *sft_emulated_gpu(void) {
    return "sft emulated GPU (tools/cuda-emulate): kernels run on the CPU, device memory is a separate region";
}

EXPORT CUresult cuInit(unsigned int flags) {
    if (flags != 0) return fail(INVALID_VALUE, "cuInit flags %u (must be 0)", flags);
    std::lock_guard<std::mutex> g(memory.lock);
    if (!memory.reserve()) return fail(OUT_OF_MEMORY, "cannot reserve %zu GiB of address space for device memory", kRegionBytes >> 30);
    install_fault_handler();
    initialized = true;
    return SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *version) {
    if (!version) return fail(INVALID_VALUE, "cuDriverGetVersion: NULL");
    *version = 12090;
    return SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult e, const char **s) {
    for (const auto &n : kErrors)
        if (n.code == e) { *s = n.name; return SUCCESS; }
    *s = nullptr;
    return INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(CUresult e, const char **s) {
    thread_local std::string text;
    for (const auto &n : kErrors)
        if (n.code == e) {
            if (e == last_code && !last_detail.empty()) {
                text = std::string(n.text) + ": " + last_detail;
                *s = text.c_str();
            } else {
                *s = n.text;
            }
            return SUCCESS;
        }
    *s = nullptr;
    return INVALID_VALUE;
}

#define REQUIRE_INIT() \
    if (!initialized) return fail(NOT_INITIALIZED, "%s before cuInit", __func__)

/// How many devices the emulation shows: $SFT_EMU_GPUS (1 to 8, default 1), so a data-parallel
/// job's ranks can each take "their" GPU (local rank r: cuda:r). They are one device in
/// disguise: every ordinal shares this process's memory region and its one context.
static int device_count() {
    static const int n = [] {
        const char *e = getenv("SFT_EMU_GPUS");
        const int v = e && *e ? atoi(e) : 1;
        return v < 1 ? 1 : v > 8 ? 8 : v;
    }();
    return n;
}
static bool bad_device(int d) { return d < 0 || d >= device_count(); }

EXPORT CUresult cuDeviceGetCount(int *count) {
    REQUIRE_INIT();
    *count = device_count();
    return SUCCESS;
}

EXPORT CUresult cuDeviceGet(int *d, int ordinal) {
    REQUIRE_INIT();
    if (bad_device(ordinal)) return fail(INVALID_DEVICE, "device %d does not exist (the emulation has %d; SFT_EMU_GPUS sets how many)", ordinal, device_count());
    *d = ordinal;
    return SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, int d) {
    REQUIRE_INIT();
    if (bad_device(d) || !name || len <= 0) return fail(INVALID_VALUE, "cuDeviceGetName(device %d, len %d)", d, len);
    snprintf(name, (size_t)len, "%s", "sft emulated GPU (CPU)");
    return SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *v, int attribute, int d) {
    REQUIRE_INIT();
    if (bad_device(d)) return fail(INVALID_DEVICE, "cuDeviceGetAttribute: device %d", d);
    switch (attribute) {
    case 1: *v = 1024; return SUCCESS;          // max threads per block
    case 8: *v = 48 << 10; return SUCCESS;      // shared memory per block
    case 10: *v = 32; return SUCCESS;           // warp size
    case 16: *v = 2; return SUCCESS;            // multiprocessors: grid-stride loops stay short
    case 75: *v = 9; return SUCCESS;            // compute capability 9.0
    case 76: *v = 0; return SUCCESS;
    case 97: *v = 232448; return SUCCESS;       // opt-in shared memory per block
    default: return fail(INVALID_VALUE, "device attribute %d is not emulated", attribute);
    }
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, int d) {
    REQUIRE_INIT();
    if (bad_device(d)) return fail(INVALID_DEVICE, "cuDeviceTotalMem: device %d", d);
    *bytes = kDeviceBytes;
    return SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(void **c, int d) {
    REQUIRE_INIT();
    if (bad_device(d)) return fail(INVALID_DEVICE, "cuDevicePrimaryCtxRetain: device %d", d);
    *c = &context_tag;
    return SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(void *c) {
    REQUIRE_INIT();
    if (c != &context_tag && c != nullptr) return fail(INVALID_CONTEXT, "cuCtxSetCurrent(%p): not the primary context", c);
    return SUCCESS;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    REQUIRE_INIT();
    std::lock_guard<std::mutex> g(memory.lock);
    *total_bytes = kDeviceBytes;
    *free_bytes = kDeviceBytes - (memory.used < kDeviceBytes ? memory.used : kDeviceBytes);
    return SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    REQUIRE_INIT();
    if (!p || bytes == 0) return fail(INVALID_VALUE, "cuMemAlloc of %zu bytes", bytes);
    std::lock_guard<std::mutex> g(memory.lock);
    const size_t span = Memory::span(bytes);
    if (memory.used + span - kPage > kDeviceBytes)
        return fail(OUT_OF_MEMORY, "cuMemAlloc of %zu bytes: %zu of %zu bytes in use", bytes, memory.used, kDeviceBytes);
    for (auto it = memory.free_ranges.begin(); it != memory.free_ranges.end(); ++it) {
        if (it->second < span) continue;
        const size_t offset = it->first, rest = it->second - span;
        memory.free_ranges.erase(it);
        if (rest) memory.free_ranges[offset + span] = rest;
        char *a = memory.base + offset;
        if (mprotect(a, span - kPage, PROT_READ | PROT_WRITE) != 0)
            return fail(OUT_OF_MEMORY, "cuMemAlloc of %zu bytes: mprotect failed", bytes);
        memset(a, 0xff, span - kPage);  // NaN bytes: what a kernel reads before anything wrote it
        memory.live[(uintptr_t)a] = bytes;
        memory.used += span - kPage;
        *p = (CUdeviceptr)(uintptr_t)a;
        return SUCCESS;
    }
    return fail(OUT_OF_MEMORY, "cuMemAlloc of %zu bytes: the device region is fragmented", bytes);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    REQUIRE_INIT();
    std::lock_guard<std::mutex> g(memory.lock);
    auto it = memory.live.find((uintptr_t)p);
    if (it == memory.live.end()) return fail(INVALID_VALUE, "cuMemFree(0x%llx): not the start of a live device allocation", p);
    const size_t span = Memory::span(it->second);
    char *a = (char *)it->first;
    madvise(a, span - kPage, MADV_DONTNEED);
    mprotect(a, span - kPage, PROT_NONE);
    memory.used -= span - kPage;
    memory.live.erase(it);
    size_t offset = (size_t)(a - memory.base), bytes = span;
    auto next = memory.free_ranges.lower_bound(offset);
    if (next != memory.free_ranges.end() && next->first == offset + bytes) {
        bytes += next->second;
        next = memory.free_ranges.erase(next);
    }
    if (next != memory.free_ranges.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == offset) {
            offset = prev->first;
            bytes += prev->second;
            memory.free_ranges.erase(prev);
        }
    }
    memory.free_ranges[offset] = bytes;
    return SUCCESS;
}

EXPORT CUresult cuMemAllocHost_v2(void **p, size_t bytes) {
    REQUIRE_INIT();
    *p = aligned_alloc(kPage, (bytes + kPage - 1) / kPage * kPage);
    return *p ? SUCCESS : fail(OUT_OF_MEMORY, "cuMemAllocHost of %zu bytes", bytes);
}

EXPORT CUresult cuMemFreeHost(void *p) {
    free(p);
    return SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *) {
    REQUIRE_INIT();
    if (n == 0) return SUCCESS;
    if (CUresult r = check_range("cuMemcpyHtoDAsync", "destination", dst, n)) return r;
    if (CUresult r = check_host("cuMemcpyHtoDAsync", "source", src, n)) return r;
    memcpy((void *)(uintptr_t)dst, src, n);
    return SUCCESS;
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *) {
    REQUIRE_INIT();
    if (n == 0) return SUCCESS;
    if (CUresult r = check_range("cuMemcpyDtoHAsync", "source", src, n)) return r;
    if (CUresult r = check_host("cuMemcpyDtoHAsync", "destination", dst, n)) return r;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return SUCCESS;
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *) {
    REQUIRE_INIT();
    if (n == 0) return SUCCESS;
    if (CUresult r = check_range("cuMemcpyDtoDAsync", "destination", dst, n)) return r;
    if (CUresult r = check_range("cuMemcpyDtoDAsync", "source", src, n)) return r;
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return SUCCESS;
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void *) {
    REQUIRE_INIT();
    if (n == 0) return SUCCESS;
    if (CUresult r = check_range("cuMemsetD8Async", "destination", dst, n)) return r;
    memset((void *)(uintptr_t)dst, v, n);
    return SUCCESS;
}

EXPORT CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, void *) {
    REQUIRE_INIT();
    if (n == 0) return SUCCESS;
    if (dst % 4) return fail(INVALID_VALUE, "cuMemsetD32Async destination 0x%llx is not 4-byte aligned", dst);
    if (CUresult r = check_range("cuMemsetD32Async", "destination", dst, n * 4)) return r;
    unsigned *p = (unsigned *)(uintptr_t)dst;
    for (size_t i = 0; i < n; i++) p[i] = v;
    return SUCCESS;
}

EXPORT CUresult cuStreamCreate(void **s, unsigned int) {
    REQUIRE_INIT();
    *s = &stream_tag;
    return SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(void *) {
    REQUIRE_INIT();
    return SUCCESS;
}

EXPORT CUresult cuEventCreate(void **e, unsigned int) {
    REQUIRE_INIT();
    *e = &event_tag;
    return SUCCESS;
}

EXPORT CUresult cuEventRecord(void *, void *) { return SUCCESS; }
EXPORT CUresult cuEventQuery(void *) { return SUCCESS; }
EXPORT CUresult cuEventSynchronize(void *) { return SUCCESS; }

EXPORT CUresult cuModuleLoadData(void **m, const void *image) {
    REQUIRE_INIT();
    std::string source, std_flag, error, so, log;
    if (!emu::parse_image((const char *)image, source, std_flag, error)) return fail(INVALID_IMAGE, "%s", error.c_str());
    if (!emu::compile(source, std_flag, so, log))
        return fail(INVALID_IMAGE, "the module does not compile: %.700s", log.c_str());
    void *h = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) return fail(INVALID_IMAGE, "cannot load %s: %s", so.c_str(), dlerror());
    *m = new Module{h};
    return SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
    REQUIRE_INIT();
    if (!m) return fail(INVALID_HANDLE, "cuModuleGetFunction(%s): NULL module", name);
    auto *mod = (Module *)m;
    void *entry = dlsym(mod->handle, (std::string("emu_entry_") + name).c_str());
    if (!entry) return fail(NOT_FOUND, "the module has no extern \"C\" __global__ kernel %s", name);
    *f = new Function{(int (*)(const emu_launch *))entry, name};
    return SUCCESS;
}

EXPORT CUresult cuFuncSetAttribute(void *f, int attribute, int value) {
    REQUIRE_INIT();
    auto *fn = (Function *)f;
    if (!fn) return fail(INVALID_HANDLE, "cuFuncSetAttribute: NULL function");
    if (attribute != 8)
        return fail(NOT_SUPPORTED, "cuFuncSetAttribute(%s, attribute %d): only the dynamic shared memory limit (8) is emulated",
                    fn->name.c_str(), attribute);
    if (value < 0 || value > 232448)
        return fail(INVALID_VALUE, "cuFuncSetAttribute(%s): %d bytes of dynamic shared memory (at most 232448)", fn->name.c_str(), value);
    fn->max_dynamic_shared = value;
    return SUCCESS;
}

EXPORT CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned smem, void *, void **params, void **extra) {
    REQUIRE_INIT();
    auto *fn = (Function *)f;
    if (!fn) return fail(INVALID_HANDLE, "cuLaunchKernel: NULL function");
    if (extra) return fail(NOT_SUPPORTED, "cuLaunchKernel(%s): `extra` launch options are not emulated", fn->name.c_str());
    if ((int)smem > fn->max_dynamic_shared)
        return fail(INVALID_VALUE, "cuLaunchKernel(%s): %u bytes of dynamic shared memory, above the kernel's limit of %d "
                    "(cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)", fn->name.c_str(), smem, fn->max_dynamic_shared);
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
        return fail(INVALID_VALUE, "cuLaunchKernel(%s): grid (%u, %u, %u) block (%u, %u, %u) has a zero", fn->name.c_str(), gx, gy, gz, bx, by, bz);
    char error[1024] = "";
    emu_launch L = {{gx, gy, gz}, {bx, by, bz}, smem, params, nullptr, check_kernel_pointer, error, sizeof error};
    std::lock_guard<std::mutex> g(launch_lock);
    running_kernel = fn->name.c_str();
    const int r = fn->entry(&L);
    running_kernel = nullptr;
    switch (r) {
    case EMU_OK: return SUCCESS;
    case EMU_BAD_POINTER: return fail(INVALID_VALUE, "%s", error);
    case EMU_BAD_LAUNCH: return fail(LAUNCH_OUT_OF_RESOURCES, "%s", error);
    default: return fail(LAUNCH_FAILED, "%s", error);
    }
}

/// For the emulated cuBLASLt (linked against this library): 0 when [p, p + n) lies in one live
/// device allocation; otherwise nonzero with the reason in `why`.
EXPORT int sft_emulated_device_range(unsigned long long p, size_t n, char *why, size_t cap) {
    return memory.check((uintptr_t)p, n, why, cap);
}
