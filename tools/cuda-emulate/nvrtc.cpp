// The emulated NVRTC (libnvrtc.so.12): the NVRTC calls sft's loader resolves
// (cuda_loader.c, nvrtc_symbols). "Compiling" builds the source as host C++ (compile.cpp) and
// returns an image naming the source and its kernels (compile.h), which the emulated driver
// loads. The image is the same whether CUBIN or PTX is asked for.
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "compile.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

enum {
    NVRTC_SUCCESS = 0, NVRTC_ERROR_OUT_OF_MEMORY = 1, NVRTC_ERROR_PROGRAM_CREATION_FAILURE = 2,
    NVRTC_ERROR_INVALID_INPUT = 3, NVRTC_ERROR_INVALID_PROGRAM = 4, NVRTC_ERROR_INVALID_OPTION = 5,
    NVRTC_ERROR_COMPILATION = 6,
};

struct Program {
    std::string source, name, log, image;
    bool compiled = false;
};

/// What sft's loader reports when this library is loaded (cuda_loader.c, sft_cuda_emulation).
EXPORT const char *sft_emulated_gpu(void) { return "sft emulated GPU (tools/cuda-emulate): kernels are built as host C++ on the CPU"; }

EXPORT const char *nvrtcGetErrorString(int r) {
    switch (r) {
    case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
    case NVRTC_ERROR_OUT_OF_MEMORY: return "NVRTC_ERROR_OUT_OF_MEMORY";
    case NVRTC_ERROR_PROGRAM_CREATION_FAILURE: return "NVRTC_ERROR_PROGRAM_CREATION_FAILURE";
    case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
    case NVRTC_ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
    case NVRTC_ERROR_INVALID_OPTION: return "NVRTC_ERROR_INVALID_OPTION";
    case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
    default: return "NVRTC_ERROR_UNKNOWN";
    }
}

/// 12.99: no real NVRTC has it, so sft's kernel cache never mixes emulated and real images.
EXPORT int nvrtcVersion(int *major, int *minor) {
    *major = 12;
    *minor = 99;
    return NVRTC_SUCCESS;
}

EXPORT int nvrtcCreateProgram(Program **prog, const char *src, const char *name, int num_headers,
                              const char *const *, const char *const *) {
    if (!prog || !src) return NVRTC_ERROR_INVALID_INPUT;
    if (num_headers != 0) return NVRTC_ERROR_INVALID_INPUT;  // in-memory headers: not emulated
    *prog = new Program{src, name ? name : "default_program"};
    return NVRTC_SUCCESS;
}

EXPORT int nvrtcDestroyProgram(Program **prog) {
    if (!prog || !*prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete *prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}

static bool starts(const std::string &s, const char *p) { return s.compare(0, strlen(p), p) == 0; }

EXPORT int nvrtcCompileProgram(Program *prog, int n, const char *const *options) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    std::string std_flag = "c++17";
    for (int i = 0; i < n; i++) {
        const std::string o = options[i];
        if (starts(o, "--gpu-architecture=") || starts(o, "-arch=")) continue;  // every arch is the CPU
        if (starts(o, "--std=") || starts(o, "-std=")) { std_flag = o.substr(o.find('=') + 1); continue; }
        if (starts(o, "--ptxas-options=") || starts(o, "-lineinfo") || starts(o, "--generate-line-info")) continue;
        prog->log = "emulated NVRTC: option " + o + " is not emulated\n";
        return NVRTC_ERROR_INVALID_OPTION;
    }
    std::string so;
    if (!emu::compile(prog->source, std_flag, so, prog->log)) return NVRTC_ERROR_COMPILATION;
    std::vector<std::string> names;
    for (const auto &k : emu::find_kernels(prog->source)) names.push_back(k.name);
    prog->image = emu::make_image(prog->source, std_flag, names);
    prog->compiled = true;
    return NVRTC_SUCCESS;
}

EXPORT int nvrtcGetProgramLogSize(Program *prog, size_t *size) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    *size = prog->log.size() + 1;
    return NVRTC_SUCCESS;
}

EXPORT int nvrtcGetProgramLog(Program *prog, char *log) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(log, prog->log.c_str(), prog->log.size() + 1);
    return NVRTC_SUCCESS;
}

static int image_size(Program *prog, size_t *size) {
    if (!prog || !prog->compiled) return NVRTC_ERROR_INVALID_PROGRAM;
    *size = prog->image.size();
    return NVRTC_SUCCESS;
}

static int image(Program *prog, char *out) {
    if (!prog || !prog->compiled) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, prog->image.data(), prog->image.size());
    return NVRTC_SUCCESS;
}

EXPORT int nvrtcGetCUBINSize(Program *prog, size_t *size) { return image_size(prog, size); }
EXPORT int nvrtcGetCUBIN(Program *prog, char *out) { return image(prog, out); }
EXPORT int nvrtcGetPTXSize(Program *prog, size_t *size) { return image_size(prog, size); }
EXPORT int nvrtcGetPTX(Program *prog, char *out) { return image(prog, out); }
