// The CPU kernels' thread pool: runs the (part, nparts) pieces of one op on the calling thread
// and a few persistent worker threads.
//
// Why not DispatchQueue.concurrentPerform: on Linux, libdispatch's idle workers often start
// 1-2 ms after being asked, so an op of a few milliseconds — most of them, in a training step
// that alternates them with OpenBLAS GEMMs — ran on one core (measured on the project machine:
// attention forward at T=512 took 4.7 ms after a GEMM with libdispatch, 2.8 ms with this pool,
// 2.3 ms back to back). Here a worker spins for a short while after each job before it sleeps,
// so the next op finds it awake; the spin is bounded (1 ms) so an idle process stays idle.
//
// One job runs at a time. A call made while a job runs (from another thread, or from inside a
// job) runs its pieces on its own thread instead of waiting.
#include "sftkernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WORKERS = 255 };
static const double SPIN_SECONDS = 1e-3;

// A job lives in one of two slots (job g in slot g & 1), so publishing job g + 1 never writes
// the slot a late worker may still be reading. A worker announces itself in `refs` and then
// checks that the slot still holds the job it was told about; a caller reusing a slot first
// marks it invalid and then waits for `refs` to drop to 0. Both sides use sequentially
// consistent operations, so either the caller waits for the worker or the worker sees the mark
// (the store-then-load pattern of Dekker's algorithm).
typedef struct {
    _Atomic int64_t gen;       // the job's generation; -1 while the slot is rewritten
    _Atomic int refs;          // workers looking at this slot
    void (*fn)(void *ctx, int64_t i);
    void *ctx;
    int64_t n;
    _Atomic int64_t next;      // next piece to take
    _Atomic int64_t left;      // pieces not finished yet
} slot_t;

static slot_t slots[2];
static _Atomic int64_t generation;    // the latest job published
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static _Atomic int sleeping;          // workers waiting on `wake`
static int started;                   // workers created so far (under run_lock)
static _Thread_local int in_pool_job;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// Runs pieces of a job until none are left to take.
static void take_pieces(slot_t *s) {
    int64_t i;
    while ((i = atomic_fetch_add_explicit(&s->next, 1, memory_order_relaxed)) < s->n) {
        s->fn(s->ctx, i);
        atomic_fetch_sub_explicit(&s->left, 1, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    int64_t seen = (int64_t)(intptr_t)arg;   // the generation before the worker existed
    in_pool_job = 1;
    for (;;) {
        // Wait for a new job: spin briefly, then sleep until woken.
        double start = seconds();
        int64_t g;
        for (int k = 0; (g = atomic_load(&generation)) == seen; k++) {
            cpu_relax();
            if ((k & 255) == 255 && seconds() - start > SPIN_SECONDS) {
                pthread_mutex_lock(&wake_lock);
                atomic_fetch_add(&sleeping, 1);
                while ((g = atomic_load(&generation)) == seen) pthread_cond_wait(&wake, &wake_lock);
                atomic_fetch_sub(&sleeping, 1);
                pthread_mutex_unlock(&wake_lock);
                break;
            }
        }
        seen = g;
        slot_t *s = &slots[g & 1];
        atomic_fetch_add(&s->refs, 1);
        if (atomic_load(&s->gen) == g) take_pieces(s);
        atomic_fetch_sub(&s->refs, 1);
    }
    return NULL;
}

/// Creates workers up to `want` (under run_lock); returns how many exist.
static int ensure_workers(int want) {
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    while (started < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)atomic_load(&generation));
        pthread_attr_destroy(&attr);
        if (failed) break;
        started++;
    }
    return started;
}

void sft_parallel_for(int64_t n, int threads, void (*fn)(void *ctx, int64_t i), void *ctx) {
    if (n <= 0) return;
    if (n == 1 || threads <= 1 || in_pool_job || pthread_mutex_trylock(&run_lock) != 0) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    if (ensure_workers(threads - 1) == 0) {
        pthread_mutex_unlock(&run_lock);
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    const int64_t g = atomic_load(&generation) + 1;
    slot_t *s = &slots[g & 1];
    atomic_store(&s->gen, -1);
    while (atomic_load(&s->refs) != 0) cpu_relax();   // a late worker from two jobs ago
    s->fn = fn;
    s->ctx = ctx;
    s->n = n;
    atomic_store(&s->next, 0);
    atomic_store(&s->left, n);
    atomic_store(&s->gen, g);
    atomic_store(&generation, g);
    if (atomic_load(&sleeping) > 0) {
        pthread_mutex_lock(&wake_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&wake_lock);
    }
    in_pool_job = 1;
    take_pieces(s);
    in_pool_job = 0;
    while (atomic_load_explicit(&s->left, memory_order_acquire) > 0) cpu_relax();
    pthread_mutex_unlock(&run_lock);
}
