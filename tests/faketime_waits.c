/* Waits on the true clocks under libfaketime, for `./run test-ahead`.
 *
 * `./run test-ahead` preloads Debian 12's libfaketime 0.9.10 into every process the tests
 * start, with the wall clock a fixed offset ahead (FAKETIME=+365d) and the monotonic clock
 * left true (FAKETIME_DONT_FAKE_MONOTONIC=1), so that timeouts still take as long as they
 * say. Two things of libfaketime's own waits then go wrong, and this library, preloaded
 * before it, takes those waits away from it (with a fixed offset and no rate, all it does
 * for a wait that is relative, or on another clock than the wall clock, is pass it on):
 *
 * - It shifts the deadline of clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...) as if
 *   the monotonic clock were faked too: the kernel is handed a negative time and answers
 *   EINVAL, which is how Python 3.11's time.sleep() fails (libfaketime issue 426).
 * - It stops faking in a thread while that thread waits in poll, select, epoll_wait or a
 *   sleep, and a signal handler that runs during the wait reads the true time. PostgreSQL
 *   runs its timeouts (statement_timeout, lock_timeout, deadlock_timeout) from SIGALRM
 *   and compares the true time with deadlines taken on the fake one: they never fire.
 *
 * Faking the monotonic clock as well is no way out: glibc's sem_clockwait, behind every
 * timeout of a Python lock, is not intercepted and would wait for a deadline a year away.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

/* The C library's own definition of `name`, passing over libfaketime's. */
static void *libc_symbol(const char *name) {
    static void *libc;
    if (libc == NULL) {
        libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    }
    return dlsym(libc, name);
}

#define LIBC(type, name) ((type)libc_symbol(#name))

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request,
                    struct timespec *remain) {
    typedef int (*fn)(clockid_t, int, const struct timespec *, struct timespec *);
    if (clock_id == CLOCK_REALTIME && (flags & TIMER_ABSTIME)) {
        /* A deadline on the fake wall clock: libfaketime turns it into a true one. */
        static fn next;
        if (next == NULL) {
            next = (fn)dlsym(RTLD_NEXT, "clock_nanosleep");
        }
        return next(clock_id, flags, request, remain);
    }
    return LIBC(fn, clock_nanosleep)(clock_id, flags, request, remain);
}

int nanosleep(const struct timespec *request, struct timespec *remain) {
    return LIBC(int (*)(const struct timespec *, struct timespec *), nanosleep)(request, remain);
}

int usleep(useconds_t usec) {
    return LIBC(int (*)(useconds_t), usleep)(usec);
}

unsigned int sleep(unsigned int seconds) {
    return LIBC(unsigned int (*)(unsigned int), sleep)(seconds);
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms) {
    return LIBC(int (*)(struct pollfd *, nfds_t, int), poll)(fds, nfds, timeout_ms);
}

int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
          const sigset_t *sigmask) {
    typedef int (*fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    return LIBC(fn, ppoll)(fds, nfds, timeout, sigmask);
}

int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
           struct timeval *timeout) {
    typedef int (*fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    return LIBC(fn, select)(nfds, readfds, writefds, exceptfds, timeout);
}

int pselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
            const struct timespec *timeout, const sigset_t *sigmask) {
    typedef int (*fn)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                      const sigset_t *);
    return LIBC(fn, pselect)(nfds, readfds, writefds, exceptfds, timeout, sigmask);
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms) {
    typedef int (*fn)(int, struct epoll_event *, int, int);
    return LIBC(fn, epoll_wait)(epfd, events, maxevents, timeout_ms);
}

int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms,
                const sigset_t *sigmask) {
    typedef int (*fn)(int, struct epoll_event *, int, int, const sigset_t *);
    return LIBC(fn, epoll_pwait)(epfd, events, maxevents, timeout_ms, sigmask);
}
