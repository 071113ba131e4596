// The interface between the emulated driver (driver.cpp) and a kernel module it loads: the
// emulated NVRTC (nvrtc.cpp, compile.cpp) appends to a module's source one entry per
// `extern "C" __global__` kernel, `int emu_entry_<kernel>(const emu_launch *)`, which unpacks
// the launch's arguments by the kernel's own parameter types (emu_kernel.h, emu::run) and runs
// the grid. Plain C, so both sides agree on the layout whatever compiled them.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct emu_launch {
    unsigned grid[3], block[3];
    unsigned shared_bytes;  // dynamic shared memory per block, as the launch asked
    void **params;          // cuLaunchKernel's kernelParams: one pointer per kernel parameter
    void *ctx;              // handed back to check_pointer
    // 0 when `p`, kernel parameter `index`, is NULL or points into a live device allocation;
    // otherwise nonzero, with the reason written to `why` (at most `cap` bytes).
    int (*check_pointer)(void *ctx, const void *p, int index, char *why, size_t cap);
    char *error;            // the entry's message when it returns nonzero
    size_t error_cap;
};

// Return values of an entry.
enum { EMU_OK = 0, EMU_BAD_LAUNCH = 1, EMU_BAD_POINTER = 2, EMU_KERNEL_FAILED = 3 };

#ifdef __cplusplus
}
#endif
