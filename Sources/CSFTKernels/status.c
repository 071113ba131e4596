// Status and error messages for the C shim (thread-local last error), and run-time CPU
// feature detection used to pick kernel variants.
#include "sftkernels.h"
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

const char *sft_cpu_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
    return "generic";
}
