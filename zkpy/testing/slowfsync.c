/* slowfsync: an LD_PRELOAD shim that makes fsync and fdatasync slow, for a process whose disk
 * should look slow (issue 17: a follower whose fsync is 100x slower keeps bounded memory).
 *
 * Each fsync/fdatasync does the real sync first, then sleeps
 *     MS milliseconds + (bytes written to that fd since its last sync) / BYTES_PER_S seconds,
 * so the process sees both the latency and the bandwidth of a slow disk: with latency alone a
 * writer that batches (group commit) keeps up by making its batches larger.
 *
 * Configuration, read at every sync so a test can switch a running process between slow and fast:
 *   ZKPY_SLOW_FSYNC_CONTROL=path  a file holding "MS BYTES_PER_S" (BYTES_PER_S 0: no bandwidth
 *                                 limit); a missing or empty file means no delay at all.
 *   otherwise ZKPY_SLOW_FSYNC_MS and ZKPY_SLOW_FSYNC_BYTES_PER_S (fixed for the process's life).
 *
 * Bytes are counted in write/pwrite/pwrite64/writev/pwritev per file descriptor (reset by close
 * and by a sync), which is how CPython (os.pwrite, os.write, file objects) and the JVM's
 * FileChannel/FileOutputStream write; both sync through libc fsync/fdatasync, so interposing
 * the libc symbols reaches them. Not covered: sync_file_range, syncfs, msync and O_SYNC/O_DSYNC
 * writes (neither zkpy nor Apache ZooKeeper uses them for its log).
 *
 * Build: gcc -shared -fPIC -O2 -o slowfsync.so slowfsync.c -ldl   (zkpy/testing/slowfsync.py)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 65536

static _Atomic unsigned long long unsynced[MAX_FDS];

typedef int (*sync_fn)(int);
typedef int (*close_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);

/* The next definition of `name` after this library (libc's). Looked up on first use: a race
 * between threads only stores the same pointer twice. */
static void *next_symbol(void **slot, const char *name) {
    void *f = atomic_load((_Atomic(void *) *)slot);
    if (f == NULL) {
        f = dlsym(RTLD_NEXT, name);
        if (f == NULL) {
            static const char msg[] = "slowfsync: a libc symbol is missing\n";
            ssize_t ignored = syscall(1, 2, msg, sizeof msg - 1); /* SYS_write: not our own write */
            (void)ignored;
            abort();
        }
        atomic_store((_Atomic(void *) *)slot, f);
    }
    return f;
}
#define REAL(type, name) ((type)next_symbol(&real_##name, #name))
static void *real_fsync, *real_fdatasync, *real_close, *real_write, *real_pwrite, *real_pwrite64,
    *real_writev, *real_pwritev;

static void count(int fd, ssize_t n) {
    if (n > 0 && fd >= 0 && fd < MAX_FDS)
        atomic_fetch_add(&unsynced[fd], (unsigned long long)n);
}

/* (ms, bytes_per_s) now: from the control file when one is named, else from the environment. */
static void settings(double *ms, double *bytes_per_s) {
    *ms = 0;
    *bytes_per_s = 0;
    const char *control = getenv("ZKPY_SLOW_FSYNC_CONTROL");
    if (control == NULL) {
        const char *a = getenv("ZKPY_SLOW_FSYNC_MS"), *b = getenv("ZKPY_SLOW_FSYNC_BYTES_PER_S");
        if (a != NULL) *ms = strtod(a, NULL);
        if (b != NULL) *bytes_per_s = strtod(b, NULL);
        return;
    }
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    REAL(close_fn, close)(fd);
    if (n <= 0) return;
    buf[n] = 0;
    if (sscanf(buf, "%lf %lf", ms, bytes_per_s) < 1) *ms = 0;
}

static void pause_for(double seconds) {
    struct timespec t = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Sleep the latency, then the transfer of what was written to `fd` since its last sync, in
 * slices of at most 50 ms that read the settings again: a process made fast mid-sync (a large
 * batch at a low bandwidth can take a minute) is fast from its next slice on. */
static void slow_down(int fd) {
    double bytes_left = (fd >= 0 && fd < MAX_FDS) ? (double)atomic_exchange(&unsynced[fd], 0) : 0;
    double latency_done = 0;
    for (;;) {
        double ms, bytes_per_s;
        settings(&ms, &bytes_per_s);
        double latency_left = ms / 1000.0 - latency_done;
        if (latency_left < 0) latency_left = 0;
        double transfer_left = bytes_per_s > 0 && bytes_left > 0 ? bytes_left / bytes_per_s : 0;
        double left = latency_left + transfer_left;
        if (left <= 0) return;
        double slice = left < 0.05 ? left : 0.05;
        pause_for(slice);
        double used = slice < latency_left ? slice : latency_left;
        latency_done += used;
        bytes_left -= (slice - used) * bytes_per_s;
    }
}

int fsync(int fd) {
    int saved, rc = REAL(sync_fn, fsync)(fd);
    saved = errno;
    slow_down(fd);
    errno = saved;
    return rc;
}

int fdatasync(int fd) {
    int saved, rc = REAL(sync_fn, fdatasync)(fd);
    saved = errno;
    slow_down(fd);
    errno = saved;
    return rc;
}

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS) atomic_store(&unsynced[fd], 0);
    return REAL(close_fn, close)(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    ssize_t done = REAL(write_fn, write)(fd, buf, n);
    count(fd, done);
    return done;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
    ssize_t done = REAL(pwrite_fn, pwrite)(fd, buf, n, offset);
    count(fd, done);
    return done;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
    ssize_t done = REAL(pwrite_fn, pwrite64)(fd, buf, n, offset);
    count(fd, done);
    return done;
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    ssize_t done = REAL(writev_fn, writev)(fd, iov, n);
    count(fd, done);
    return done;
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t offset) {
    ssize_t done = REAL(pwritev_fn, pwritev)(fd, iov, n, offset);
    count(fd, done);
    return done;
}
