/* ct_gil.h - clocks and sleeps for the GIL-share governor (Core._gil_section).
 *
 * A worker in "polite" mode charges the CPU time its thread spent running Python
 * tasks (a stand-in for its GIL hold: a thread running bytecode holds the GIL) and
 * then sleeps without the GIL, so the application's threads get the rest.
 */
#ifndef CT_GIL_H
#define CT_GIL_H

#include <stdint.h>
#include <time.h>

/* A clock's reading in ns. */
static inline int64_t ct_clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CPU time of the calling thread (a vDSO-less syscall: ~0.3 us). */
static inline int64_t ct_thread_cpu_ns(void) { return ct_clock_ns(CLOCK_THREAD_CPUTIME_ID); }

/* CPU time of the whole process: all threads, with or without the GIL. */
static inline int64_t ct_process_cpu_ns(void) { return ct_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

/* Sleep `ns` nanoseconds (call without the GIL). */
static inline void ct_sleep_ns(int64_t ns) {
    struct timespec ts;
    if (ns <= 0) return;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    nanosleep(&ts, NULL);
}

/* One step of FNV-1a over a 64-bit word: fingerprints of thread positions. */
static inline uint64_t ct_fingerprint(uint64_t h, uint64_t v) {
    return (h ^ v) * 1099511628211ULL;
}

#endif
