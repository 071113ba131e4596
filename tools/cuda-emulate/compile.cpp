// The emulated NVRTC's compiler (compile.h): a kernel source becomes host C++ — `extern
// __shared__` arrays rewritten to the block's dynamic shared memory, one `emu_entry_<kernel>`
// appended per kernel — built with emu_kernel.h force-included by the system C++ compiler
// (`c++`, or $SFT_EMU_CXX) into a shared object, cached by a hash of everything that goes in.
#include "compile.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

extern char **environ;

namespace emu {

static const char kMagic[] = "SFT-EMULATED-MODULE 1\n";

std::string make_image(const std::string &source, const std::string &std_flag, const std::vector<std::string> &kernels) {
    std::string out = kMagic;
    out += "std " + std_flag + "\n";
    out += "source " + std::to_string(source.size()) + "\n" + source;
    for (const auto &k : kernels) {
        out += k;
        out.push_back('\0');
    }
    out.push_back('\0');
    return out;
}

bool parse_image(const char *image, std::string &source, std::string &std_flag, std::string &error) {
    if (!image || strncmp(image, kMagic, sizeof kMagic - 1) != 0) {
        error = "the image is not from the emulated NVRTC (a real CUBIN or PTX cannot run on the emulated GPU)";
        return false;
    }
    const char *p = image + sizeof kMagic - 1;
    if (strncmp(p, "std ", 4) != 0) { error = "emulated module image: no std line"; return false; }
    const char *eol = strchr(p, '\n');
    std_flag.assign(p + 4, eol);
    p = eol + 1;
    if (strncmp(p, "source ", 7) != 0) { error = "emulated module image: no source line"; return false; }
    char *end = nullptr;
    const unsigned long long n = strtoull(p + 7, &end, 10);
    if (!end || *end != '\n') { error = "emulated module image: bad source length"; return false; }
    source.assign(end + 1, n);
    return true;
}

static bool ident(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

std::vector<Kernel> find_kernels(const std::string &s) {
    std::vector<Kernel> out;
    size_t at = 0;
    while ((at = s.find("__global__", at)) != std::string::npos) {
        const size_t start = at;
        at += 10;
        if (start > 0 && ident(s[start - 1])) continue;
        // Only `extern "C"` kernels are entries (templates and C++ names cannot be looked up).
        const size_t decl = s.find_last_of(";}", start);
        const std::string before = s.substr(decl == std::string::npos ? 0 : decl + 1, start - (decl == std::string::npos ? 0 : decl + 1));
        if (before.find("extern \"C\"") == std::string::npos) continue;
        size_t p = at;
        auto skip = [&] { while (p < s.size() && isspace((unsigned char)s[p])) p++; };
        skip();
        if (s.compare(p, 4, "void") != 0) continue;
        p += 4;
        skip();
        unsigned bounds = 0;
        if (s.compare(p, 17, "__launch_bounds__") == 0) {
            p += 17;
            skip();
            if (p < s.size() && s[p] == '(') bounds = (unsigned)strtoul(s.c_str() + p + 1, nullptr, 0);
            const size_t close = s.find(')', p);
            if (close == std::string::npos) break;
            p = close + 1;
            skip();
        }
        const size_t name0 = p;
        while (p < s.size() && ident(s[p])) p++;
        const std::string name = s.substr(name0, p - name0);
        skip();
        if (!name.empty() && p < s.size() && s[p] == '(') out.push_back({name, bounds});
        at = p;
    }
    return out;
}

/// `extern __shared__ T name[];` -> `static T *const name = (T *)::emu::dynamic_shared;`
static std::string rewrite_dynamic_shared(const std::string &s) {
    std::string out;
    size_t at = 0;
    for (;;) {
        const size_t hit = s.find("extern __shared__", at);
        const size_t semi = hit == std::string::npos ? hit : s.find(';', hit);
        if (hit == std::string::npos || semi == std::string::npos) break;
        std::string decl = s.substr(hit + 17, semi - hit - 17);  // " T name[]"
        const size_t bracket = decl.rfind('[');
        size_t n1 = bracket;
        while (n1 > 0 && isspace((unsigned char)decl[n1 - 1])) n1--;
        size_t n0 = n1;
        while (n0 > 0 && ident(decl[n0 - 1])) n0--;
        out += s.substr(at, hit - at);
        if (bracket == std::string::npos || n0 == n1) {
            out += s.substr(hit, semi - hit);  // not an array: left for the compiler to reject
        } else {
            std::string type = decl.substr(0, n0);
            const std::string name = decl.substr(n0, n1 - n0);
            // The buffer is 256-byte aligned: an __align__ in the declaration has nothing to add.
            for (size_t a; (a = type.find("__align__")) != std::string::npos;) {
                const size_t close = type.find(')', a);
                type.erase(a, close == std::string::npos ? std::string::npos : close + 1 - a);
            }
            out += "static " + type + " *const " + name + " = (" + type + " *)::emu::dynamic_shared";
        }
        at = semi;
    }
    return out + s.substr(at);
}

static std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static std::string here() {
    Dl_info info;
    if (!dladdr((void *)&here, &info) || !info.dli_fname) return ".";
    std::string p = info.dli_fname;
    const size_t slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

static std::string cache_dir() {
    if (const char *d = getenv("SFT_EMU_CACHE"); d && *d) return d;
    if (const char *d = getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/sft/emulated-kernels";
    if (const char *d = getenv("HOME"); d && *d) return std::string(d) + "/.cache/sft/emulated-kernels";
    return "/tmp/sft-emulated-kernels-" + std::to_string(getuid());
}

static void make_dirs(const std::string &path) {
    for (size_t i = 1; i <= path.size(); i++)
        if (i == path.size() || path[i] == '/') mkdir(path.substr(0, i).c_str(), 0755);
}

static uint64_t fnv1a(const std::string &s, uint64_t h = 0xcbf29ce484222325ull) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

bool compile(const std::string &source, const std::string &std_flag, std::string &so_path, std::string &log) {
    const std::string dir = here();
    const std::string header = read_file(dir + "/emu_kernel.h") + read_file(dir + "/emu_abi.h");
    if (header.empty()) { log = "emulated NVRTC: emu_kernel.h is missing beside " + dir; return false; }
    std::string text = rewrite_dynamic_shared(source) + "\n// entries (emulated NVRTC)\n";
    for (const auto &k : find_kernels(source)) text += "EMU_ENTRY(" + k.name + ", " + std::to_string(k.bounds) + ")\n";
    const char *cxx_env = getenv("SFT_EMU_CXX");
    const std::string cxx = cxx_env && *cxx_env ? cxx_env : "c++";
    std::vector<std::string> args = {cxx, "-std=" + std_flag, "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-w",
                                     "-I", dir, "-include", "emu_kernel.h", "-x", "c++"};
    std::string key_text = text + '\0' + header;
    for (const auto &a : args) key_text += '\0' + a;
    char key[17];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)fnv1a(key_text));
    const std::string cache = cache_dir();
    so_path = cache + "/" + key + ".so";
    struct stat st;
    if (stat(so_path.c_str(), &st) == 0 && st.st_size > 0) return true;
    make_dirs(cache);
    const std::string tmp = cache + "/." + key + "." + std::to_string(getpid());
    {
        std::ofstream f(tmp + ".cpp", std::ios::binary);
        f << text;
        if (!f) { log = "emulated NVRTC: cannot write " + tmp + ".cpp"; return false; }
    }
    args.insert(args.end(), {tmp + ".cpp", "-o", tmp + ".so"});
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log_path = tmp + ".log";
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, cxx.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    if (rc == 0) waitpid(pid, &status, 0);
    log = read_file(log_path);
    unlink(log_path.c_str());
    unlink((tmp + ".cpp").c_str());
    if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        unlink((tmp + ".so").c_str());
        if (rc != 0) log = "emulated NVRTC: cannot run " + cxx + ": " + strerror(rc);
        return false;
    }
    if (rename((tmp + ".so").c_str(), so_path.c_str()) != 0) {
        log = "emulated NVRTC: cannot move the module into " + cache;
        return false;
    }
    return true;
}

}  // namespace emu
