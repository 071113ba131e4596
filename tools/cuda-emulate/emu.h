// A CPU emulation of the little of CUDA that sft's kernels use, to run their sources on a machine
// without a GPU: every thread of a block is a std::thread, __syncthreads a block-wide barrier,
// warp shuffles an exchange through memory between two warp-wide barriers. Blocks run one at a
// time, so `__shared__` can be plain static storage. Slow and only for checking indexing,
// masking and reductions on small shapes — not timing, not memory-model corner cases.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3e { unsigned x = 1, y = 1, z = 1; };
struct alignas(16) float4 { float x, y, z, w; };
inline thread_local dim3e threadIdx, blockIdx;
inline dim3e blockDim, gridDim;

namespace emu {
inline std::barrier<> *block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline uint64_t exchange[32][32];
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define asm(...) ((void)0)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    emu::exchange[warp][lane] = bits;
    emu::warp_barriers[warp]->arrive_and_wait();
    bits = emu::exchange[warp][lane ^ lane_mask];
    emu::warp_barriers[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline int atomicCAS(int *p, int expected, int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline float atomicAdd(float *p, float v) {
    float old = *p, want;
    do { want = old + v; } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
using std::max;
using std::min;

/// Runs kernel(args...) over grid × block threads, one block at a time.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3e grid, unsigned threads, A... args) {
    gridDim = grid;
    blockDim = dim3e{threads, 1, 1};
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                std::barrier<> block(threads);
                emu::block_barrier = &block;
                emu::warp_barriers.clear();
                for (unsigned w = 0; w < (threads + 31) / 32; w++)
                    emu::warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; t++)
                    pool.emplace_back([&, t] {
                        threadIdx = dim3e{t, 0, 0};
                        blockIdx = dim3e{x, y, z};
                        kernel(P(args)...);
                        // A thread that returns leaves both barriers, so the others go on.
                        emu::warp_barriers[t >> 5]->arrive_and_drop();
                        emu::block_barrier->arrive_and_drop();
                    });
                for (auto &th : pool) th.join();
            }
}
