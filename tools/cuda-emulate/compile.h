// The emulated NVRTC's compiler, shared by libnvrtc (which compiles when asked) and libcuda
// (which compiles again when a module image names a shared object no longer in the cache).
#pragma once
#include <string>
#include <vector>

namespace emu {

/// The image the emulated NVRTC returns as "CUBIN" or "PTX" and the emulated driver loads:
/// NUL-free text (the driver API takes no size), then each kernel name NUL-terminated (as in a
/// real CUBIN's symbol table), then an empty name.
///   "SFT-EMULATED-MODULE 1\nstd <c++17>\nsource <bytes>\n<source>" name "\0" ... "\0"
std::string make_image(const std::string &source, const std::string &std_flag, const std::vector<std::string> &kernels);
/// Parses an image; false with `error` when it is not one.
bool parse_image(const char *image, std::string &source, std::string &std_flag, std::string &error);

/// The `extern "C" __global__` kernels of a source: name and __launch_bounds__ (0 when none).
struct Kernel {
    std::string name;
    unsigned bounds;
};
std::vector<Kernel> find_kernels(const std::string &source);

/// Compiles a kernel source (as NVRTC was handed it) into a shared object in the cache folder,
/// or finds it there. True with its path in `so_path`; false with the compiler's output in `log`.
bool compile(const std::string &source, const std::string &std_flag, std::string &so_path, std::string &log);

}  // namespace emu
