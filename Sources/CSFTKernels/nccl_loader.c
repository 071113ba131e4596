// Run-time loading of NCCL (libnccl.so.2) for data parallelism on GPUs: found like the CUDA
// libraries (sft_cuda_open_library: $SFT_CUDA_LIBS, CUDA homes, the loader's path, the
// nvidia-nccl-cu12/cu13 wheels' nvidia/nccl/lib), its functions with dlsym. No NCCL header is
// included: the prototypes below follow nccl.h (NCCL 2.x), whose ABI passes ncclUniqueId
// (128 bytes) by value to ncclCommInitRank and numbers the types and operations as below.
#define _GNU_SOURCE
#include "sftkernels.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

// nccl.h: ncclDataType_t and ncclRedOp_t values, ncclResult_t 0 = ncclSuccess.
enum { NCCL_UINT8 = 1, NCCL_FLOAT32 = 7, NCCL_FLOAT64 = 8, NCCL_SUM = 0 };
typedef struct { char internal[SFT_NCCL_UNIQUE_ID_BYTES]; } nccl_unique_id;

static int (*p_ncclGetVersion)(int *);
static int (*p_ncclGetUniqueId)(nccl_unique_id *);
static int (*p_ncclCommInitRank)(void **, int, nccl_unique_id, int);
static int (*p_ncclCommDestroy)(void *);
static int (*p_ncclAllReduce)(const void *, void *, size_t, int, int, void *, sft_CUstream);
static int (*p_ncclBroadcast)(const void *, void *, size_t, int, int, void *, sft_CUstream);
static int (*p_ncclGroupStart)(void);
static int (*p_ncclGroupEnd)(void);
static const char *(*p_ncclGetErrorString)(int);
static const char *(*p_ncclGetLastError)(void *);  // NCCL >= 2.13; optional
static int (*p_ncclCommGetAsyncError)(void *, int *);  // NCCL >= 2.4; optional
static int (*p_ncclCommAbort)(void *);                 // NCCL >= 2.4; optional

static const char *const symbols[] = {"ncclGetVersion", "ncclGetUniqueId", "ncclCommInitRank",
                                      "ncclCommDestroy", "ncclAllReduce", "ncclBroadcast",
                                      "ncclGroupStart", "ncclGroupEnd", "ncclGetErrorString", NULL};
static void **const slots[] = {(void **)&p_ncclGetVersion, (void **)&p_ncclGetUniqueId,
                               (void **)&p_ncclCommInitRank, (void **)&p_ncclCommDestroy,
                               (void **)&p_ncclAllReduce, (void **)&p_ncclBroadcast,
                               (void **)&p_ncclGroupStart, (void **)&p_ncclGroupEnd,
                               (void **)&p_ncclGetErrorString};

static char lib_path[4096], tried[8192];
static void *handle;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    const char *names[] = {"libnccl.so.2", "libnccl.so", NULL};
    const char *wheels[] = {"nvidia/nccl/lib", "nvidia/cu13/lib", NULL};
    handle = sft_cuda_open_library("libnccl.so*", names, wheels, symbols, lib_path, sizeof lib_path,
                                   tried, sizeof tried);
    if (!handle) return;
    for (int i = 0; symbols[i]; i++) *slots[i] = dlsym(handle, symbols[i]);
    p_ncclGetLastError = (const char *(*)(void *))dlsym(handle, "ncclGetLastError");
    p_ncclCommGetAsyncError = (int (*)(void *, int *))dlsym(handle, "ncclCommGetAsyncError");
    p_ncclCommAbort = (int (*)(void *))dlsym(handle, "ncclCommAbort");
}

int sft_nccl_load(void) {
    pthread_once(&once, load);
    return handle ? 0 : -1;
}

const char *sft_nccl_lib_path(void) { return sft_nccl_load() == 0 ? lib_path : ""; }
const char *sft_nccl_tried(void) { sft_nccl_load(); return tried; }

const char *sft_nccl_emulation(void) {
    if (sft_nccl_load() != 0) return NULL;
    const char *(*describe)(void) = (const char *(*)(void))dlsym(handle, "sft_emulated_nccl");
    return describe ? describe() : NULL;
}

int sft_nccl_version(void) {
    int v = 0;
    return sft_nccl_load() == 0 && p_ncclGetVersion(&v) == 0 ? v : -1;
}

static int nccl_fail(const char *what, int code, void *comm) {
    const char *last = p_ncclGetLastError ? p_ncclGetLastError(comm) : NULL;
    return sft_set_error("%s failed: %s%s%s", what, p_ncclGetErrorString(code),
                         last && last[0] ? ": " : "", last ? last : "");
}

int sft_nccl_unique_id(void *id) {
    if (sft_nccl_load() != 0) return sft_set_error("NCCL is not loaded");
    int rc = p_ncclGetUniqueId((nccl_unique_id *)id);
    return rc == 0 ? 0 : nccl_fail("ncclGetUniqueId", rc, NULL);
}

int sft_nccl_comm_init(void **comm, int ranks, const void *id, int rank) {
    if (sft_nccl_load() != 0) return sft_set_error("NCCL is not loaded");
    nccl_unique_id copy;
    memcpy(&copy, id, sizeof copy);
    int rc = p_ncclCommInitRank(comm, ranks, copy, rank);
    return rc == 0 ? 0 : nccl_fail("ncclCommInitRank", rc, NULL);
}

int sft_nccl_comm_destroy(void *comm) {
    if (!handle || !comm) return 0;
    int rc = p_ncclCommDestroy(comm);
    return rc == 0 ? 0 : nccl_fail("ncclCommDestroy", rc, comm);
}

int sft_nccl_group(int start) {
    if (!handle) return sft_set_error("NCCL is not loaded");
    int rc = start ? p_ncclGroupStart() : p_ncclGroupEnd();
    return rc == 0 ? 0 : nccl_fail(start ? "ncclGroupStart" : "ncclGroupEnd", rc, NULL);
}

int sft_nccl_allreduce_sum_f32(sft_CUdeviceptr buf, size_t count, void *comm, sft_CUstream stream) {
    if (!handle) return sft_set_error("NCCL is not loaded");
    void *p = (void *)(uintptr_t)buf;
    int rc = p_ncclAllReduce(p, p, count, NCCL_FLOAT32, NCCL_SUM, comm, stream);
    return rc == 0 ? 0 : nccl_fail("ncclAllReduce (f32 sum)", rc, comm);
}

int sft_nccl_broadcast(sft_CUdeviceptr buf, size_t bytes, int root, void *comm, sft_CUstream stream) {
    if (!handle) return sft_set_error("NCCL is not loaded");
    void *p = (void *)(uintptr_t)buf;
    int rc = p_ncclBroadcast(p, p, bytes, NCCL_UINT8, root, comm, stream);
    return rc == 0 ? 0 : nccl_fail("ncclBroadcast", rc, comm);
}

enum { NCCL_IN_PROGRESS = 7 };  // ncclInProgress

int sft_nccl_async_state(void *comm) {
    if (!handle) return sft_set_error("NCCL is not loaded");
    if (!p_ncclCommGetAsyncError || !comm) return 0;
    int state = 0;
    int rc = p_ncclCommGetAsyncError(comm, &state);
    if (rc != 0) return nccl_fail("ncclCommGetAsyncError", rc, comm);
    if (state == NCCL_IN_PROGRESS) return 1;
    return state == 0 ? 0 : nccl_fail("a collective on the GPU", state, comm);
}

int sft_nccl_comm_abort(void *comm) {
    if (!handle || !comm) return 0;
    if (!p_ncclCommAbort) return sft_set_error("this NCCL has no ncclCommAbort");
    int rc = p_ncclCommAbort(comm);
    return rc == 0 ? 0 : nccl_fail("ncclCommAbort", rc, NULL);
}
