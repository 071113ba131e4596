// Run-time loading of MPI (Open MPI) for data-parallel training: libmpi is found with dlopen
// and its functions with dlsym, so one build of sft runs alone or as one rank of an mpirun /
// srun job (DESIGN.md "Collective"). No MPI header is included: the prototypes below follow
// the MPI 3.1 standard, and the predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...)
// are, in Open MPI's ABI (its mpi.h, OMPI_PREDEFINED_GLOBAL), the addresses of exported
// globals such as `ompi_mpi_comm_world`. MPICH-family libraries use integer handles instead
// and are refused with a message saying so.
//
// Every collective is started nonblocking and polled until it completes or the caller's
// deadline passes, so a stalled rank turns into an error on the others (the caller then ends
// the job with sft_mpi_abort) instead of a hang.
#define _GNU_SOURCE
#include "sftkernels.h"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void *mpi_handle;  // MPI_Comm, MPI_Datatype, MPI_Op, MPI_Request, MPI_Errhandler

enum { MPI_OK = 0, MPI_THREAD_SERIALIZED_LEVEL = 2 };
#define MPI_IN_PLACE_MARK ((void *)1)  // Open MPI's MPI_IN_PLACE
#define MPI_STATUS_NONE ((void *)0)    // Open MPI's MPI_STATUS_IGNORE

static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_initialized)(int *);
static int (*p_finalized)(int *);
static int (*p_finalize)(void);
static int (*p_abort)(mpi_handle, int);
static int (*p_comm_rank)(mpi_handle, int *);
static int (*p_comm_size)(mpi_handle, int *);
static int (*p_comm_set_errhandler)(mpi_handle, mpi_handle);
static int (*p_error_string)(int, char *, int *);
static int (*p_get_library_version)(char *, int *);
static int (*p_iallreduce)(const void *, void *, int, mpi_handle, mpi_handle, mpi_handle, mpi_handle *);
static int (*p_ibcast)(void *, int, mpi_handle, int, mpi_handle, mpi_handle *);
static int (*p_ibarrier)(mpi_handle, mpi_handle *);
static int (*p_test)(mpi_handle *, int *, void *);

static mpi_handle comm_world, type_float, type_double, type_byte, op_sum, errors_return;

typedef struct {
    const char *name;
    void **slot;
} symbol_t;

#define SYM(slot, name) {name, (void **)&slot}
static const symbol_t symbols[] = {
    SYM(p_init_thread, "MPI_Init_thread"), SYM(p_initialized, "MPI_Initialized"),
    SYM(p_finalized, "MPI_Finalized"), SYM(p_finalize, "MPI_Finalize"), SYM(p_abort, "MPI_Abort"),
    SYM(p_comm_rank, "MPI_Comm_rank"), SYM(p_comm_size, "MPI_Comm_size"),
    SYM(p_comm_set_errhandler, "MPI_Comm_set_errhandler"), SYM(p_error_string, "MPI_Error_string"),
    SYM(p_get_library_version, "MPI_Get_library_version"), SYM(p_iallreduce, "MPI_Iallreduce"),
    SYM(p_ibcast, "MPI_Ibcast"), SYM(p_ibarrier, "MPI_Ibarrier"), SYM(p_test, "MPI_Test"),
    // Open MPI's predefined handles: the handle is the global's address.
    SYM(comm_world, "ompi_mpi_comm_world"), SYM(type_float, "ompi_mpi_float"),
    SYM(type_double, "ompi_mpi_double"), SYM(type_byte, "ompi_mpi_byte"),
    SYM(op_sum, "ompi_mpi_op_sum"), SYM(errors_return, "ompi_mpi_errors_return"),
    {NULL, NULL}};

static int load_state = -2;  // -2: not tried, 0: loaded, -1: failed
static char lib_path[1024], load_error[1024];

/// Names tried in order; $SFT_MPI_LIB (a file) comes first when set.
static const char *const candidates[] = {"libmpi.so.40", "libmpi.so", NULL};

static int open_one(const char *file) {
    // RTLD_GLOBAL: Open MPI's components (mca_*.so) are opened later and link against the
    // symbols of libmpi and libopen-pal, which must therefore be global.
    void *h = dlopen(file, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error, "%s: %s", file, e ? e : "cannot open");
        return -1;
    }
    if (!dlsym(h, "ompi_mpi_comm_world")) {
        snprintf(load_error, sizeof load_error,
                 "%s is not Open MPI (no ompi_mpi_comm_world); sft supports Open MPI only "
                 "(MPICH, Intel MPI and MVAPICH use another ABI)", file);
        dlclose(h);
        return -1;
    }
    for (const symbol_t *s = symbols; s->name; s++) {
        *s->slot = dlsym(h, s->name);
        if (!*s->slot) {
            snprintf(load_error, sizeof load_error, "%s lacks %s (an MPI 3 library is needed)", file,
                     s->name);
            dlclose(h);
            return -1;
        }
    }
    Dl_info info;
    if (dladdr(*symbols[0].slot, &info) && info.dli_fname) {
        snprintf(lib_path, sizeof lib_path, "%s", info.dli_fname);
    } else {
        snprintf(lib_path, sizeof lib_path, "%s", file);
    }
    return 0;
}

int sft_mpi_load(void) {
    if (load_state != -2) return load_state;
    const char *env = getenv("SFT_MPI_LIB");
    if (env && *env) {
        load_state = open_one(env);
        return load_state;
    }
    char first_error[1024] = "";
    for (int i = 0; candidates[i]; i++) {
        if (open_one(candidates[i]) == 0) return load_state = 0;
        if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", load_error);
    }
    snprintf(load_error, sizeof load_error,
             "Open MPI's libmpi.so.40 not found (%s); install Open MPI (Debian: apt-get install "
             "openmpi-bin) or set SFT_MPI_LIB to its libmpi.so", first_error);
    return load_state = -1;
}

const char *sft_mpi_lib_path(void) { return load_state == 0 ? lib_path : ""; }
const char *sft_mpi_load_error(void) { return load_state == -1 ? load_error : ""; }

static int mpi_fail(const char *what, int code) {
    char text[512] = "";
    int len = 0;
    if (p_error_string && p_error_string(code, text, &len) != MPI_OK) snprintf(text, sizeof text, "code %d", code);
    return sft_set_error("%s failed: %s", what, text);
}

int sft_mpi_library_version(char *out, size_t cap) {
    if (sft_mpi_load() != 0) return sft_set_error("%s", load_error);
    char text[256 + 1] = "";  // MPI_MAX_LIBRARY_VERSION_STRING in Open MPI
    int len = 0;
    int rc = p_get_library_version(text, &len);
    if (rc != MPI_OK) return mpi_fail("MPI_Get_library_version", rc);
    text[len < 256 ? len : 256] = 0;
    char *nl = strchr(text, '\n');  // Open MPI appends the release date on further lines
    if (nl) *nl = 0;
    snprintf(out, cap, "%s", text);
    return 0;
}

int sft_mpi_init(int *rank, int *size) {
    if (sft_mpi_load() != 0) return sft_set_error("%s", load_error);
    int done = 0, rc;
    p_initialized(&done);
    if (!done) {
        int provided = 0;
        rc = p_init_thread(NULL, NULL, MPI_THREAD_SERIALIZED_LEVEL, &provided);
        if (rc != MPI_OK) return mpi_fail("MPI_Init_thread", rc);
        if (provided < MPI_THREAD_SERIALIZED_LEVEL) {
            return sft_set_error("MPI_Init_thread: the library gives thread level %d, sft needs "
                                 "MPI_THREAD_SERIALIZED (2)", provided);
        }
        // Errors come back as codes (reported with their rank and step) instead of killing
        // the job from inside the library with a bare message.
        rc = p_comm_set_errhandler(comm_world, errors_return);
        if (rc != MPI_OK) return mpi_fail("MPI_Comm_set_errhandler", rc);
    }
    if ((rc = p_comm_rank(comm_world, rank)) != MPI_OK) return mpi_fail("MPI_Comm_rank", rc);
    if ((rc = p_comm_size(comm_world, size)) != MPI_OK) return mpi_fail("MPI_Comm_size", rc);
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/// Polls `req` until it completes (0), the deadline passes (SFT_MPI_TIMEOUT) or MPI reports
/// an error (-1). Spins briefly, then sleeps between tests so waiting ranks leave the cores to
/// the ranks still computing (jobs are often oversubscribed on small machines).
static int wait_request(mpi_handle *req, const char *what, double timeout_s) {
    double deadline = timeout_s > 0 ? now_seconds() + timeout_s : 0;
    for (long polls = 0;; polls++) {
        int flag = 0;
        int rc = p_test(req, &flag, MPI_STATUS_NONE);
        if (rc != MPI_OK) return mpi_fail(what, rc);
        if (flag) return 0;
        if (polls > 200) {
            struct timespec pause = {0, polls > 20000 ? 1000000 : 50000};  // 1 ms later, 50 us first
            nanosleep(&pause, NULL);
        }
        if (deadline > 0 && (polls & 15) == 0 && now_seconds() > deadline) {
            sft_set_error("%s: no answer from every rank within %.0f s", what, timeout_s);
            return SFT_MPI_TIMEOUT;
        }
    }
}

/// MPI counts are ints: long buffers go in chunks.
enum { CHUNK = 1 << 28 };

static int allreduce_sum(void *buf, size_t count, size_t elem, mpi_handle type, const char *what,
                         double timeout_s) {
    if (load_state != 0) return sft_set_error("MPI is not loaded");
    for (size_t done = 0; done < count;) {
        int n = (int)(count - done < CHUNK ? count - done : CHUNK);
        mpi_handle req = NULL;
        int rc = p_iallreduce(MPI_IN_PLACE_MARK, (char *)buf + done * elem, n, type, op_sum, comm_world, &req);
        if (rc != MPI_OK) return mpi_fail(what, rc);
        if ((rc = wait_request(&req, what, timeout_s)) != 0) return rc;
        done += (size_t)n;
    }
    return 0;
}

int sft_mpi_allreduce_sum_f32(float *buf, size_t count, double timeout_s) {
    return allreduce_sum(buf, count, sizeof(float), type_float, "MPI all-reduce (f32 sum)", timeout_s);
}

int sft_mpi_allreduce_sum_f64(double *buf, size_t count, double timeout_s) {
    return allreduce_sum(buf, count, sizeof(double), type_double, "MPI all-reduce (f64 sum)", timeout_s);
}

int sft_mpi_iallreduce_sum_f32(float *buf, size_t count, void **request) {
    if (load_state != 0) return sft_set_error("MPI is not loaded");
    if (count > (size_t)CHUNK) return sft_set_error("MPI all-reduce (f32 sum): %zu elements in one request (at most %d)", count, CHUNK);
    *request = NULL;
    int rc = p_iallreduce(MPI_IN_PLACE_MARK, buf, (int)count, type_float, op_sum, comm_world, (mpi_handle *)request);
    return rc == MPI_OK ? 0 : mpi_fail("MPI all-reduce (f32 sum)", rc);
}

int sft_mpi_request_test(void **request, int *done) {
    *done = 0;
    if (!*request) { *done = 1; return 0; }
    int rc = p_test((mpi_handle *)request, done, MPI_STATUS_NONE);
    if (rc != MPI_OK) return mpi_fail("MPI all-reduce (f32 sum)", rc);
    if (*done) *request = NULL;  // (Open MPI's MPI_REQUEST_NULL is not NULL)
    return 0;
}

int sft_mpi_request_wait(void **request, double timeout_s) {
    if (!*request) return 0;
    int rc = wait_request((mpi_handle *)request, "MPI all-reduce (f32 sum)", timeout_s);
    if (rc == 0) *request = NULL;
    return rc;
}

int sft_mpi_broadcast(void *buf, size_t bytes, int root, double timeout_s) {
    if (load_state != 0) return sft_set_error("MPI is not loaded");
    for (size_t done = 0; done < bytes;) {
        int n = (int)(bytes - done < CHUNK ? bytes - done : CHUNK);
        mpi_handle req = NULL;
        int rc = p_ibcast((char *)buf + done, n, type_byte, root, comm_world, &req);
        if (rc != MPI_OK) return mpi_fail("MPI broadcast", rc);
        if ((rc = wait_request(&req, "MPI broadcast", timeout_s)) != 0) return rc;
        done += (size_t)n;
    }
    return 0;
}

int sft_mpi_barrier(double timeout_s) {
    if (load_state != 0) return sft_set_error("MPI is not loaded");
    mpi_handle req = NULL;
    int rc = p_ibarrier(comm_world, &req);
    if (rc != MPI_OK) return mpi_fail("MPI barrier", rc);
    return wait_request(&req, "MPI barrier", timeout_s);
}

void sft_mpi_abort(int code) {
    if (load_state == 0) {
        int done = 0;
        p_initialized(&done);
        if (done) p_abort(comm_world, code);
    }
    exit(code);
}

int sft_mpi_finalize(void) {
    if (load_state != 0) return 0;
    int init = 0, fin = 0;
    p_initialized(&init);
    p_finalized(&fin);
    if (!init || fin) return 0;
    int rc = p_finalize();
    return rc == MPI_OK ? 0 : mpi_fail("MPI_Finalize", rc);
}
