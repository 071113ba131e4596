// Status and error messages for the C shim (thread-local last error), and run-time CPU
// feature detection used to pick kernel variants (see SFT_DISPATCH in cpu.h).
#include "cpu.h"
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *sft_last_error(void) { return last_error; }

int sft_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

// -1 until first use. Reads and writes race only benignly (every writer stores the same
// detected value; sft_cpu_set_isa is for tests and benchmarks, called between kernels).
static int isa_level = -1;

static int detected_level(void) {
#if SFT_HAS_VARIANTS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return 1;
#endif
    return 0;
}

int sft_isa_level(void) {
    int level = __atomic_load_n(&isa_level, __ATOMIC_RELAXED);
    if (level < 0) {
        level = detected_level();
        __atomic_store_n(&isa_level, level, __ATOMIC_RELAXED);
    }
    return level;
}

static const char *const isa_names[] = {"generic", "avx2", "avx512"};

const char *sft_cpu_isa(void) { return isa_names[sft_isa_level()]; }

int sft_cpu_set_isa(const char *name) {
    int want = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, isa_names[i]) == 0) want = i;
    if (want < 0) return sft_set_error("unknown instruction set '%s' (use avx512, avx2 or generic)", name);
    if (want > detected_level())
        return sft_set_error("this CPU does not support %s (best: %s)", name, isa_names[detected_level()]);
    __atomic_store_n(&isa_level, want, __ATOMIC_RELAXED);
    return 0;
}
