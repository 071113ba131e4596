// The emulated GPU's NCCL (libnccl.so.2): the subset of NCCL's API sft uses — unique id,
// communicator over all ranks, in-place or out-of-place all-reduce (f32/f64 sum) and broadcast,
// group calls — implemented with the MPI library of the job (Open MPI, opened here with dlopen;
// sft has already initialized it). Emulated device memory is host memory of this process, so
// device pointers go to MPI as they are, after the emulated driver (libcuda.so.1, linked) has
// confirmed they lie in live device allocations: a host pointer, a freed buffer or a count past
// an allocation's end is an error naming it, as cuda-memcheck would report it on a GPU.
//
// Collectives are asynchronous, as on a GPU, and stricter than one: a call starts a nonblocking
// MPI operation and returns; the work completes only when the caller asks, through
// ncclCommGetAsyncError (ncclInProgress until every rank has joined) or ncclCommDestroy. sft
// must therefore wait on the host before it reads a reduced buffer — which is also where its
// collective_timeout applies (ncclCommAbort then drops the unfinished work). Group calls have
// nothing to defer. One communicator spans MPI_COMM_WORLD: ranks and size must be MPI's.
// The values below are NCCL's ABI (nccl.h): result codes, data types, ncclSum.
#include <dlfcn.h>
#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <vector>
#include <unistd.h>

#define EXPORT extern "C" __attribute__((visibility("default")))

extern "C" int sft_emulated_device_range(unsigned long long p, size_t n, char *why, size_t cap);

namespace {

enum Result { Success = 0, UnhandledCudaError = 1, SystemError = 2, InternalError = 3, InvalidArgument = 4, InvalidUsage = 5,
              InProgress = 7 };
enum DataType { Int8 = 0, Uint8 = 1, Int32 = 2, Uint32 = 3, Int64 = 4, Uint64 = 5, Float16 = 6, Float32 = 7, Float64 = 8, Bfloat16 = 9 };
enum RedOp { Sum = 0 };
constexpr size_t kIdBytes = 128;
constexpr char kMagic[] = "sft-emulated-nccl";
struct UniqueId { char internal[kIdBytes]; };
struct Comm {
    int rank, size;
    UniqueId id;
    std::vector<void *> pending;   // MPI requests of collectives not yet known to be complete
};

thread_local char last_error[1024];

Result fail(Result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return r;
}

// Open MPI: handles are the addresses of exported globals; MPI_IN_PLACE is (void *)1.
using Handle = void *;
struct MPI {
    int (*initialized)(int *) = nullptr;
    int (*comm_rank)(Handle, int *) = nullptr;
    int (*comm_size)(Handle, int *) = nullptr;
    int (*iallreduce)(const void *, void *, int, Handle, Handle, Handle, Handle *) = nullptr;
    int (*ibcast)(void *, int, Handle, int, Handle, Handle *) = nullptr;
    int (*bcast)(void *, int, Handle, int, Handle) = nullptr;
    int (*test)(Handle *, int *, void *) = nullptr;
    int (*wait)(Handle *, void *) = nullptr;
    Handle world = nullptr, type_float = nullptr, type_double = nullptr, type_byte = nullptr, op_sum = nullptr;
    bool ready = false;
} mpi;

template <class T> bool sym(void *h, T &slot, const char *name) {
    slot = reinterpret_cast<T>(dlsym(h, name));
    return slot != nullptr;
}

Result load_mpi() {
    if (mpi.ready) return Success;
    void *h = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    if (!h) h = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!h) return fail(SystemError, "the emulated NCCL runs over Open MPI, but libmpi.so.40 cannot be opened (%s)", dlerror());
    if (!sym(h, mpi.initialized, "MPI_Initialized") || !sym(h, mpi.comm_rank, "MPI_Comm_rank") ||
        !sym(h, mpi.comm_size, "MPI_Comm_size") || !sym(h, mpi.iallreduce, "MPI_Iallreduce") ||
        !sym(h, mpi.ibcast, "MPI_Ibcast") || !sym(h, mpi.bcast, "MPI_Bcast") || !sym(h, mpi.test, "MPI_Test") ||
        !sym(h, mpi.wait, "MPI_Wait") || !sym(h, mpi.world, "ompi_mpi_comm_world") ||
        !sym(h, mpi.type_float, "ompi_mpi_float") || !sym(h, mpi.type_double, "ompi_mpi_double") ||
        !sym(h, mpi.type_byte, "ompi_mpi_byte") || !sym(h, mpi.op_sum, "ompi_mpi_op_sum"))
        return fail(SystemError, "libmpi.so.40 is not Open MPI 3+ (a symbol is missing)");
    int done = 0;
    mpi.initialized(&done);
    if (!done) return fail(InvalidUsage, "the emulated NCCL needs MPI initialized first (a job started by mpirun; sft initializes MPI)");
    mpi.ready = true;
    return Success;
}

size_t type_size(int t) {
    switch (t) {
    case Int8: case Uint8: return 1;
    case Float16: case Bfloat16: return 2;
    case Int32: case Uint32: case Float32: return 4;
    case Int64: case Uint64: case Float64: return 8;
    default: return 0;
    }
}

/// Success when [p, p + bytes) lies in one live emulated device allocation.
Result check_device(const char *op, const char *arg, const void *p, size_t bytes) {
    char why[512];
    if (sft_emulated_device_range((unsigned long long)(uintptr_t)p, bytes, why, sizeof why) != 0)
        return fail(InvalidArgument, "%s: %s (%zu bytes): %s", op, arg, bytes, why);
    return Success;
}

Result check_comm(const char *op, const Comm *c) {
    if (!c) return fail(InvalidArgument, "%s: comm is NULL", op);
    if (!mpi.ready) return fail(InvalidUsage, "%s: MPI is not loaded", op);
    return Success;
}

/// With $SFT_EMU_NCCL_TRACE=1, the first call of each collective says so on stderr (tests
/// check that a job's reductions really went through NCCL).
void trace_first(const char *op, bool &done, int rank, size_t count) {
    if (done) return;
    done = true;
    const char *e = getenv("SFT_EMU_NCCL_TRACE");
    if (e && strcmp(e, "1") == 0) fprintf(stderr, "emulated NCCL: %s on rank %d (%zu elements)\n", op, rank, count);
}
bool traced_allreduce, traced_broadcast;

/// MPI counts are ints: long buffers go in pieces.
constexpr size_t kChunk = size_t(1) << 28;

}  // namespace

EXPORT const char *sft_emulated_nccl(void) { return "sft emulated NCCL over MPI (CPU)"; }

EXPORT const char *ncclGetErrorString(int r) {
    switch (r) {
    case Success: return "no error";
    case UnhandledCudaError: return "unhandled cuda error";
    case SystemError: return "unhandled system error";
    case InternalError: return "internal error";
    case InvalidArgument: return "invalid argument";
    case InvalidUsage: return "invalid usage";
    default: return "unknown result code";
    }
}

EXPORT const char *ncclGetLastError(void *) { return last_error; }

EXPORT int ncclGetVersion(int *version) {
    if (!version) return fail(InvalidArgument, "ncclGetVersion: version is NULL");
    *version = 21800;   // the API level emulated: NCCL 2.18's
    return Success;
}

EXPORT int ncclGetUniqueId(UniqueId *id) {
    if (!id) return fail(InvalidArgument, "ncclGetUniqueId: id is NULL");
    memset(id, 0, sizeof *id);
    memcpy(id->internal, kMagic, sizeof kMagic);
    std::random_device rd;
    uint64_t words[4] = {rd(), rd(), (uint64_t)getpid(), rd()};
    memcpy(id->internal + 32, words, sizeof words);
    return Success;
}

EXPORT int ncclCommInitRank(Comm **comm, int nranks, UniqueId id, int rank) {
    if (!comm) return fail(InvalidArgument, "ncclCommInitRank: comm is NULL");
    if (memcmp(id.internal, kMagic, sizeof kMagic) != 0)
        return fail(InvalidArgument, "ncclCommInitRank: the unique id was not made by ncclGetUniqueId (not broadcast from rank 0?)");
    if (Result r = load_mpi()) return r;
    int world_rank = -1, world_size = 0;
    mpi.comm_rank(mpi.world, &world_rank);
    mpi.comm_size(mpi.world, &world_size);
    if (nranks != world_size || rank != world_rank)
        return fail(InvalidUsage, "ncclCommInitRank(nranks %d, rank %d): the emulated NCCL has one communicator over MPI_COMM_WORLD (%d ranks, this is rank %d)",
                    nranks, rank, world_size, world_rank);
    // Every rank must hold rank 0's id, as with NCCL (whose ranks would otherwise never meet).
    UniqueId root = id;
    if (mpi.bcast(root.internal, (int)kIdBytes, mpi.type_byte, 0, mpi.world) != 0)
        return fail(SystemError, "ncclCommInitRank: MPI_Bcast of the unique id failed");
    if (memcmp(root.internal, id.internal, kIdBytes) != 0)
        return fail(InvalidUsage, "ncclCommInitRank: rank %d's unique id differs from rank 0's", rank);
    *comm = new Comm{rank, nranks, id};
    return Success;
}

/// Tests every pending request once: Success when all have completed, InProgress otherwise.
static Result progress(Comm *comm) {
    std::vector<void *> left;
    for (void *req : comm->pending) {
        int done = 0;
        if (mpi.test(&req, &done, nullptr) != 0) return fail(SystemError, "a collective failed in MPI_Test");
        if (!done) left.push_back(req);
    }
    comm->pending.swap(left);
    return comm->pending.empty() ? Success : InProgress;
}

EXPORT int ncclCommGetAsyncError(Comm *comm, int *state) {
    if (Result r = check_comm("ncclCommGetAsyncError", comm)) return r;
    if (!state) return fail(InvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    Result r = progress(comm);
    *state = r;
    return r == InProgress ? Success : r;
}

/// Drops the unfinished work (its MPI requests are abandoned: the job is ending) and the comm.
EXPORT int ncclCommAbort(Comm *comm) {
    delete comm;
    return Success;
}

/// Completes the outstanding work (blocking), then frees the communicator.
EXPORT int ncclCommDestroy(Comm *comm) {
    if (!comm) return Success;
    for (void *req : comm->pending) mpi.wait(&req, nullptr);
    delete comm;
    return Success;
}

EXPORT int ncclGroupStart(void) { return Success; }
EXPORT int ncclGroupEnd(void) { return Success; }

EXPORT int ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, Comm *comm, void *stream) {
    if (Result r = check_comm("ncclAllReduce", comm)) return r;
    if (op != Sum) return fail(InvalidArgument, "ncclAllReduce: reduction %d is not emulated (ncclSum only)", op);
    Handle mpi_type = type == Float32 ? mpi.type_float : type == Float64 ? mpi.type_double : nullptr;
    if (!mpi_type) return fail(InvalidArgument, "ncclAllReduce: data type %d is not emulated (ncclFloat32, ncclFloat64)", type);
    const size_t elem = type_size(type);
    if (Result r = check_device("ncclAllReduce", "sendbuff", send, count * elem)) return r;
    if (Result r = check_device("ncclAllReduce", "recvbuff", recv, count * elem)) return r;
    trace_first("ncclAllReduce", traced_allreduce, comm->rank, count);
    if (send != recv) memmove(recv, send, count * elem);
    for (size_t done = 0; done < count;) {
        const int n = (int)std::min(kChunk, count - done);
        void *req = nullptr;
        if (mpi.iallreduce((void *)1, (char *)recv + done * elem, n, mpi_type, mpi.op_sum, mpi.world, &req) != 0)
            return fail(SystemError, "ncclAllReduce: MPI_Iallreduce failed");
        comm->pending.push_back(req);
        done += (size_t)n;
    }
    return Success;
}

EXPORT int ncclBroadcast(const void *send, void *recv, size_t count, int type, int root, Comm *comm, void *stream) {
    if (Result r = check_comm("ncclBroadcast", comm)) return r;
    const size_t elem = type_size(type);
    if (!elem) return fail(InvalidArgument, "ncclBroadcast: unknown data type %d", type);
    if (root < 0 || root >= comm->size) return fail(InvalidArgument, "ncclBroadcast: root %d of %d ranks", root, comm->size);
    const size_t bytes = count * elem;
    if (comm->rank == root) {
        if (Result r = check_device("ncclBroadcast", "sendbuff", send, bytes)) return r;
    }
    if (Result r = check_device("ncclBroadcast", "recvbuff", recv, bytes)) return r;
    trace_first("ncclBroadcast", traced_broadcast, comm->rank, count);
    if (comm->rank == root && send != recv) memmove(recv, send, bytes);
    for (size_t done = 0; done < bytes;) {
        const int n = (int)std::min(kChunk, bytes - done);
        void *req = nullptr;
        if (mpi.ibcast((char *)recv + done, n, mpi.type_byte, root, mpi.world, &req) != 0)
            return fail(SystemError, "ncclBroadcast: MPI_Ibcast failed");
        comm->pending.push_back(req);
        done += (size_t)n;
    }
    return Success;
}
