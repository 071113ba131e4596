// The CUDA C that sft's kernels use, as host C++: the emulated NVRTC (compile.cpp) builds a
// module's source with this header force-included, into a shared object the emulated driver
// loads. The threads of a block run as fibers on one OS thread (their own stacks, switched by
// hand-written code, reused from block to block): a thread runs until it reaches
// `__syncthreads` or a warp operation, then the next runnable thread runs; a barrier opens when
// every thread still running has reached it. Blocks run one after another, so `__shared__` is
// plain static storage. A thread that returns leaves the barriers (the others go on).
//
// Not emulated: warp operations on part of a warp (the mask must name every running lane),
// memory-model effects of real concurrency (there is none: only barriers switch threads),
// texture/surface memory, cooperative groups, inline PTX (sources must keep `asm` behind
// `#ifdef __CUDA_ARCH__`, which is never defined here).
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu_abi.h"

// ---------------------------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // blocks run one at a time; `extern __shared__` is rewritten by compile.cpp
#define warpSize 32

// ---------------------------------------------------------------------------------------------
// Vector types
// ---------------------------------------------------------------------------------------------
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---------------------------------------------------------------------------------------------
// Fibers
// ---------------------------------------------------------------------------------------------
namespace emu {

enum State : unsigned char { Runnable, AtBlockBarrier, AtWarpBarrier, Done, NotStarted };

struct Fiber {
    void *sp;
    dim3 tid;
    unsigned lane, warp, exchanges;
    State state;
};

constexpr unsigned kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 << 10;   // per thread; a guard page below each
constexpr size_t kDynamicSharedMax = 232448;  // an H100's opt-in maximum per block

struct Block {
    Fiber fibers[kMaxThreads];
    unsigned count, live, block_arrived;
    unsigned warp_live[kMaxThreads / 32], warp_arrived[kMaxThreads / 32];
    uint32_t warp_live_bits[kMaxThreads / 32];
    uint64_t exchange[2][kMaxThreads / 32][32];  // [parity of the exchange][warp][lane]
    uint32_t deposited[2][kMaxThreads / 32];      // lanes that took part in that exchange
    void *scheduler_sp;
    char *stacks;
    void (*body)(void *);
    void *arg;
    bool in_order;  // threads run one after another in one fiber until one waits (run_block)
    bool failed;
    char message[512];
};

inline Block block;
inline Fiber *current;
inline dim3 block_idx, block_dim, grid_dim;
alignas(256) inline unsigned char dynamic_shared[kDynamicSharedMax];

}  // namespace emu

#define threadIdx (::emu::current->tid)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

#if defined(__x86_64__)
// Saves the callee-saved registers and the stack pointer in *save, switches to `load`.
extern "C" void emu_switch(void **save, void *load);
asm(R"(
    .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
#elif defined(__aarch64__)
extern "C" void emu_switch(void **save, void *load);
asm(R"(
    .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, %function
emu_switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    ret
    .size emu_switch, .-emu_switch
)");
#else
#error "the emulated GPU switches fibers on x86-64 and arm64 only"
#endif

namespace emu {

/// Back to the scheduler; returns when this thread is resumed.
inline void yield() { emu_switch(&current->sp, block.scheduler_sp); }

[[noreturn]] inline void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(block.message, sizeof block.message, fmt, ap);
    va_end(ap);
    block.failed = true;
    for (;;) yield();  // never resumed: the scheduler stops at a failure
}

inline void release_block_barrier() {
    for (unsigned i = 0; i < block.count; i++)
        if (block.fibers[i].state == AtBlockBarrier) block.fibers[i].state = Runnable;
    block.block_arrived = 0;
}

inline void release_warp_barrier(unsigned w) {
    const unsigned end = w * 32 + 32 < block.count ? w * 32 + 32 : block.count;
    for (unsigned i = w * 32; i < end; i++)
        if (block.fibers[i].state == AtWarpBarrier) block.fibers[i].state = Runnable;
    block.warp_arrived[w] = 0;
}

inline void leave_in_order();

/// __syncthreads: waits until every running thread of the block is here.
inline void sync_block() {
    if (block.in_order) leave_in_order();
    current->state = AtBlockBarrier;
    if (++block.block_arrived == block.live) release_block_barrier();
    yield();
}

/// One warp-wide exchange: every running lane of the warp deposits 8 bytes, waits for the
/// others, and gets back the slot array of this exchange (`*lanes`: which lanes deposited).
/// Two slot arrays alternate, so a lane can write its next exchange while a slower one still
/// reads this one (it cannot get two ahead: that needs the slower one at the next barrier).
inline const uint64_t *warp_exchange(unsigned mask, uint64_t value, const char *what, uint32_t *lanes = nullptr) {
    if (block.in_order) leave_in_order();
    Fiber *f = current;
    const unsigned w = f->warp;
    if ((mask & block.warp_live_bits[w]) != block.warp_live_bits[w])
        fail("%s with mask 0x%08x while lanes 0x%08x of warp %u run: partial-warp operations are not emulated",
             what, mask, block.warp_live_bits[w], w);
    const unsigned parity = f->exchanges++ & 1;
    uint64_t *slots = block.exchange[parity][w];
    if (block.warp_arrived[w] == 0) block.deposited[parity][w] = 0;  // the first lane of this exchange
    block.deposited[parity][w] |= 1u << f->lane;
    slots[f->lane] = value;
    f->state = AtWarpBarrier;
    if (++block.warp_arrived[w] == block.warp_live[w]) release_warp_barrier(w);
    yield();
    if (lanes) *lanes = block.deposited[parity][w];
    return slots;
}

template <class T> inline uint64_t bits_of(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/// The value of lane `src` (this lane's own when `src` is outside the warp or has exited).
template <class T> inline T shuffle(unsigned mask, T v, int src, const char *what) {
    uint32_t lanes = 0;
    const uint64_t *slots = warp_exchange(mask, bits_of(v), what, &lanes);
    if (src < 0 || src > 31 || !(lanes >> src & 1)) return v;
    return from_bits<T>(slots[src]);
}

/// Thread f has returned: it leaves the barriers (which may open for the others).
inline void leave(Fiber *f) {
    const unsigned w = f->warp;
    f->state = Done;
    block.live--;
    block.warp_live[w]--;
    block.warp_live_bits[w] &= ~(1u << f->lane);
    if (block.block_arrived > 0 && block.block_arrived == block.live) release_block_barrier();
    if (block.warp_arrived[w] > 0 && block.warp_arrived[w] == block.warp_live[w]) release_warp_barrier(w);
}

inline void thread_exit() {
    leave(current);
    for (;;) yield();
}

extern "C" [[noreturn]] __attribute__((visibility("hidden"))) inline void emu_thread_main() {
    block.body(block.arg);
    thread_exit();
    __builtin_unreachable();
}

inline bool reserve_stacks() {
    if (block.stacks) return true;
    const size_t page = 4096, total = kMaxThreads * kStackBytes;
    void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    for (unsigned i = 0; i < kMaxThreads; i++) mprotect((char *)p + i * kStackBytes, page, PROT_NONE);
    block.stacks = (char *)p;
    return true;
}

inline void init_thread(unsigned i) {
    Fiber &f = block.fibers[i];
    const unsigned bx = block_dim.x, by = block_dim.y;
    f.tid = dim3{i % bx, (i / bx) % by, i / (bx * by)};
    f.lane = i & 31;
    f.warp = i >> 5;
    f.exchanges = 0;
    f.state = Runnable;
}

/// Sets fiber i up to start in `entry` on its own stack.
inline void start_fiber(unsigned i, void (*entry)()) {
    init_thread(i);
    Fiber &f = block.fibers[i];
    // Stack tops staggered by 64-byte lines over 64 KiB: tops at one alignment would all fall
    // into the same cache sets, and every switch would miss.
    uintptr_t top = (uintptr_t)(block.stacks + (i + 1) * kStackBytes) - (i % 1024) * 64;
    void **sp = (void **)top;
#if defined(__x86_64__)
    *--sp = nullptr;                      // the entry's return address (it never returns)
    *--sp = (void *)entry;                // popped by emu_switch's ret
    for (int r = 0; r < 6; r++) *--sp = nullptr;  // rbp rbx r12-r15
#else
    sp -= 22;  // 176 bytes, as emu_switch saves them
    for (int r = 0; r < 22; r++) sp[r] = nullptr;
    sp[11] = (void *)entry;               // x30 (the return address)
#endif
    f.sp = sp;
}

/// The first fiber of a block: runs thread 0, 1, ... to their ends, one after another on one
/// stack, as long as none waits — kernels without barriers or warp operations never pay for a
/// switch per thread. The first thread that waits makes the block fibers (leave_in_order).
extern "C" [[noreturn]] __attribute__((visibility("hidden"))) inline void emu_in_order_main() {
    for (unsigned i = 0; i < block.count; i++) {
        init_thread(i);
        current = &block.fibers[i];
        block.body(block.arg);
        if (!block.in_order) thread_exit();  // it waited: a fiber like the others since
        leave(current);
    }
    void *unused;
    for (;;) emu_switch(&unused, block.scheduler_sp);
}

/// The current thread is about to wait while the block runs in order: the threads before it
/// have returned, it keeps the stack it runs on as its own fiber, and every later thread starts
/// as a fiber now.
inline void leave_in_order() {
    block.in_order = false;
    for (unsigned j = (unsigned)(current - block.fibers) + 1; j < block.count; j++) start_fiber(j, &emu_thread_main);
}

/// Runs the current block's threads to the end. False (with block.message) on a failure.
inline bool run_block(unsigned threads) {
    block.count = block.live = threads;
    block.block_arrived = 0;
    for (unsigned w = 0; w < (threads + 31) / 32; w++) {
        const unsigned n = threads - 32 * w < 32 ? threads - 32 * w : 32;
        block.warp_live[w] = n;
        block.warp_arrived[w] = 0;
        block.warp_live_bits[w] = n == 32 ? 0xffffffffu : (1u << n) - 1;
    }
    for (unsigned i = 1; i < threads; i++) block.fibers[i].state = NotStarted;
    block.in_order = true;
    start_fiber(0, &emu_in_order_main);
    while (block.live > 0) {
        bool ran = false;
        for (unsigned i = 0; i < threads && !block.failed; i++) {
            Fiber &f = block.fibers[i];
            if (f.state != Runnable) continue;
            current = &f;
            emu_switch(&block.scheduler_sp, f.sp);
            ran = true;
        }
        if (block.failed) return false;
        if (!ran) {
            unsigned at_block = 0, at_warp = 0;
            for (unsigned i = 0; i < threads; i++) {
                at_block += block.fibers[i].state == AtBlockBarrier;
                at_warp += block.fibers[i].state == AtWarpBarrier;
            }
            snprintf(block.message, sizeof block.message,
                     "deadlock: %u threads wait at __syncthreads and %u at a warp operation (a barrier in divergent code)",
                     at_block, at_warp);
            return false;
        }
    }
    return true;
}

template <class T> inline T load_param(void *slot) {
    T v;
    memcpy(&v, slot, sizeof v);
    return v;
}

template <class F, class Tuple> struct Call {
    F kernel;
    Tuple args;
    static void invoke(void *p) {
        auto *c = (Call *)p;
        std::apply(c->kernel, c->args);
    }
};

/// Runs kernel `name` over the launch's grid: the entry compile.cpp writes for every kernel.
/// `bounds` is its __launch_bounds__ (0 when none).
template <class... P, size_t... I>
int run_impl(void (*kernel)(P...), const char *name, unsigned bounds, const emu_launch *L, std::index_sequence<I...>) {
    using Args = std::tuple<std::decay_t<P>...>;
    Args args{load_param<std::decay_t<P>>(L->params[I])...};
    // Every pointer argument must be NULL or device memory.
    const void *pointers[sizeof...(P) + 1] = {
        (std::is_pointer_v<std::decay_t<P>> ? (const void *)(uintptr_t)std::get<I>(args) : nullptr)..., nullptr};
    const bool is_pointer[sizeof...(P) + 1] = {std::is_pointer_v<std::decay_t<P>>..., false};
    for (size_t i = 0; i < sizeof...(P); i++) {
        char why[256];
        if (is_pointer[i] && L->check_pointer(L->ctx, pointers[i], (int)i, why, sizeof why) != 0) {
            snprintf(L->error, L->error_cap, "kernel %s argument %zu: %s", name, i, why);
            return EMU_BAD_POINTER;
        }
    }
    const unsigned threads = L->block[0] * L->block[1] * L->block[2];
    if (threads == 0 || threads > kMaxThreads || L->block[2] > 64 || L->grid[1] > 65535 || L->grid[2] > 65535) {
        snprintf(L->error, L->error_cap, "kernel %s launched with block (%u, %u, %u), grid (%u, %u, %u): outside CUDA's limits",
                 name, L->block[0], L->block[1], L->block[2], L->grid[0], L->grid[1], L->grid[2]);
        return EMU_BAD_LAUNCH;
    }
    if (bounds && threads > bounds) {
        snprintf(L->error, L->error_cap, "kernel %s launched with %u threads per block, above its __launch_bounds__(%u)",
                 name, threads, bounds);
        return EMU_BAD_LAUNCH;
    }
    if (L->shared_bytes > kDynamicSharedMax) {
        snprintf(L->error, L->error_cap, "kernel %s asks %u bytes of dynamic shared memory (at most %zu)", name,
                 L->shared_bytes, kDynamicSharedMax);
        return EMU_BAD_LAUNCH;
    }
    if (!reserve_stacks()) {
        snprintf(L->error, L->error_cap, "kernel %s: cannot map the thread stacks", name);
        return EMU_KERNEL_FAILED;
    }
    Call<void (*)(P...), Args> call{kernel, args};
    block.body = &Call<void (*)(P...), Args>::invoke;
    block.arg = &call;
    block.failed = false;
    block_dim = dim3{L->block[0], L->block[1], L->block[2]};
    grid_dim = dim3{L->grid[0], L->grid[1], L->grid[2]};
    for (unsigned z = 0; z < L->grid[2]; z++)
        for (unsigned y = 0; y < L->grid[1]; y++)
            for (unsigned x = 0; x < L->grid[0]; x++) {
                block_idx = dim3{x, y, z};
                // Dynamic shared memory starts as NaN bytes, as device memory does.
                if (L->shared_bytes) memset(dynamic_shared, 0xff, L->shared_bytes);
                if (!run_block(threads)) {
                    snprintf(L->error, L->error_cap, "kernel %s, block (%u, %u, %u): %s", name, x, y, z, block.message);
                    block.failed = false;
                    return EMU_KERNEL_FAILED;
                }
            }
    return EMU_OK;
}

template <class... P>
int run(void (*kernel)(P...), const char *name, unsigned bounds, const emu_launch *L) {
    return run_impl(kernel, name, bounds, L, std::index_sequence_for<P...>{});
}

}  // namespace emu

#define EMU_ENTRY(name, bounds)                                                                 \
    extern "C" __attribute__((visibility("default"))) int emu_entry_##name(const emu_launch *L) { \
        return ::emu::run(&name, #name, bounds, L);                                             \
    }

// ---------------------------------------------------------------------------------------------
// Intrinsics
// ---------------------------------------------------------------------------------------------
inline void __syncthreads() { ::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)::emu::warp_exchange(mask, 0, "__syncwarp"); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = (int)::emu::current->lane;
    return ::emu::shuffle(mask, v, (lane & ~(width - 1)) + (src & (width - 1)), "__shfl_sync");
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = (int)::emu::current->lane, src = lane ^ lane_mask;
    return ::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane, "__shfl_xor_sync");
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = (int)::emu::current->lane, src = lane + (int)delta;
    return ::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane, "__shfl_down_sync");
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = (int)::emu::current->lane, src = lane - (int)delta;
    return ::emu::shuffle(mask, v, src >= (lane & ~(width - 1)) ? src : lane, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    uint32_t live = 0;
    const uint64_t *slots = ::emu::warp_exchange(mask, predicate != 0, "__ballot_sync", &live);
    unsigned out = 0;
    for (int l = 0; l < 32; l++)
        if ((live >> l & 1) && slots[l]) out |= 1u << l;
    return out;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return !__any_sync(mask, !predicate); }

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int __float2int_rn(float x) { return (int)lrintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> inline T __ldg(const T *p) { return *p; }

// CUDA's min/max take mixed integer types (promoted as C does); std::min does not.
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? (std::common_type_t<A, B>)b : (std::common_type_t<A, B>)a;
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? (std::common_type_t<A, B>)b : (std::common_type_t<A, B>)a;
}

// Atomics: threads switch only at barriers, so these are atomic already; the builtins keep
// them correct should blocks ever run on several OS threads.
inline int atomicCAS(int *p, int expected, int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline unsigned atomicCAS(unsigned *p, unsigned expected, unsigned desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long expected, unsigned long long desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
template <class T> inline T emu_atomic_float_add(T *p, T v) {
    T old = *p, want;
    do { want = old + v; } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
inline float atomicAdd(float *p, float v) { return emu_atomic_float_add(p, v); }
inline double atomicAdd(double *p, double v) { return emu_atomic_float_add(p, v); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicSub(int *p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline float atomicExch(float *p, float v) {
    float old;
    __atomic_exchange(p, &v, &old, __ATOMIC_SEQ_CST);
    return old;
}
inline int atomicMax(int *p, int v) {
    int old = *p;
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline int atomicMin(int *p, int v) {
    int old = *p;
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline unsigned atomicMax(unsigned *p, unsigned v) {
    unsigned old = *p;
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline int atomicOr(int *p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned *p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAnd(int *p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAnd(unsigned *p, unsigned v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
