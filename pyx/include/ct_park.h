/* ct_park.h - futex-based parking for idle workers and for threads that wait on
 * task completion.  Linux only (the futex syscall).
 *
 * Two structures:
 *
 * ct_parker - idle workers, on a LIFO stack.  Each worker sleeps on its own futex
 *   word, so a producer wakes one chosen worker: the one that parked last, whose
 *   caches are warm and whose core has not gone into a deep idle state (the kernel's
 *   FUTEX_WAKE on a shared word picks the longest sleeper instead, which made wake
 *   latency grow with the pool).  Workers that park early are left asleep.
 *
 *   A worker that found every ring empty pushes itself (word = IDLE, sleepers += 1,
 *   SEQ_CST, under the stack lock), looks at the rings again, and sleeps while its
 *   word is IDLE.  A producer publishes its item (SEQ_CST store in ct_ring_push),
 *   then reads `sleepers` (SEQ_CST): either it sees the sleeper, or the sleeper's
 *   look sees the item, so no wake-up is lost.  A waker pops the top worker and
 *   stores WOKEN into its word before FUTEX_WAKE, so a worker that had not gone to
 *   sleep yet does not sleep at all.  A worker leaving the stack on its own (it
 *   found an item, timed out, shuts down) removes itself under the lock; if a waker
 *   popped it first, it was woken and acts as such.
 *
 *   At most one wake-one is in flight (`wake_pending`): a producer that finds the
 *   token taken wakes nobody.  The token's owner is the waker until it hands the
 *   wake to a worker (WOKEN), then that worker, which clears the token (exchange,
 *   SEQ_CST) before it looks at the rings: a producer that found the token taken
 *   exchanged it before the clear, so its item is visible to that look.  A worker
 *   that leaves with an item passes the wake on if work remains; one that leaves to
 *   exit passes it on too.  A waker that finds the stack empty gives the token back
 *   and looks again.  Clearing the token early can only cause an extra wake.
 *
 *   Spinning is bounded: at most `max_spinning` workers spin at once (half the
 *   cores, as Go's scheduler does); the others park at once, so more workers than
 *   cores do not burn the cores the producers and running tasks need.
 *
 * ct_waitset - threads blocked in TaskHandle.result().  A completer stores the
 *   terminal status (SEQ_CST), then reads `waiters`; a waiter increments `waiters`
 *   (SEQ_CST), then reads the status.  Completions wake only when somebody waits.
 */
#ifndef CT_PARK_H
#define CT_PARK_H

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ct_atomic.h"

static inline int64_t ct_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleep while *addr == expected, at most timeout_ns (< 0: no limit).  Returns 1 when
   a signal handler interrupted the sleep (EINTR), else 0: a caller that must react to
   signals (the main thread: Ctrl-C) looks at them then, callers that need not ignore
   the result and simply look again. */
static inline int ct_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
        tsp = &ts;
    }
    return syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0) == -1 &&
           errno == EINTR;
}

static inline void ct_futex_wake(uint32_t *addr, int count) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline void ct_futex_wake_all(uint32_t *addr) { ct_futex_wake(addr, INT_MAX); }

/* A worker's park word (ct_worker.park): */
#define CT_PARK_RUNNING 0u  /* not on the idle stack */
#define CT_PARK_IDLE 1u     /* on the stack: asleep, or about to sleep */
#define CT_PARK_WOKEN 2u    /* popped by a waker: it owns the wake token */

typedef struct {
    /* spinlock over `depth`, `stack` and every IDLE -> RUNNING/WOKEN transition of a
       worker's park word: held for a few instructions, by parking workers and wakers */
    CT_ALIGNED int32_t lock;
    /* workers on the stack: written under the lock, read by producers without it
       (SEQ_CST: the Dekker pair with the ring publication, see above) */
    int32_t sleepers;
    /* 1 while a wake-one is in flight: set by exchange in the waker, cleared (exchange)
       by the woken worker before it looks at the rings; bounds wakes to one at a time */
    int32_t wake_pending;
    /* workers spinning now: CAS up to max_spinning / -= 1 by workers (SEQ_CST) */
    int32_t spinning;
    int32_t max_spinning;      /* immutable after ct_parker_init */
    int32_t capacity;          /* immutable after ct_parker_init */
    /* the park words of the workers on the stack, most recent last; under the lock */
    uint32_t **stack;
} ct_parker;

static inline int ct_parker_init(ct_parker *p, int32_t capacity, int32_t max_spinning) {
    p->stack = (uint32_t **)calloc((size_t)capacity, sizeof(uint32_t *));
    if (p->stack == NULL) return -1;
    p->capacity = capacity;
    p->max_spinning = max_spinning < 1 ? 1 : max_spinning;
    return 0;
}

static inline void ct_parker_free(ct_parker *p) {
    free(p->stack);
    p->stack = NULL;
}

static inline void ct_parker_lock(ct_parker *p) {
    int spins = 0;
    while (__atomic_exchange_n(&p->lock, 1, __ATOMIC_ACQUIRE)) {
        while (ct_load_relaxed(&p->lock)) {
            /* the holder may have been preempted (more threads than cores): yield */
            if (++spins < 64) ct_cpu_relax(); else { sched_yield(); spins = 0; }
        }
    }
}

static inline void ct_parker_unlock(ct_parker *p) {
    __atomic_store_n(&p->lock, 0, __ATOMIC_RELEASE);
}

/* Worker: may I spin?  Then ct_parker_spin_end() when done. */
static inline int ct_parker_spin_begin(ct_parker *p) {
    int32_t n = ct_load_seqcst(&p->spinning);
    while (n < p->max_spinning) {
        if (__atomic_compare_exchange_n(&p->spinning, &n, n + 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return 1;
    }
    return 0;
}

static inline void ct_parker_spin_end(ct_parker *p) { ct_add_seqcst(&p->spinning, -1); }

/* Worker: go on the stack (then look at the rings once more before sleeping). */
static inline void ct_parker_push(ct_parker *p, uint32_t *word) {
    ct_parker_lock(p);
    CT_ASSERT(p->sleepers < p->capacity);
    ct_store_seqcst(word, CT_PARK_IDLE);
    p->stack[p->sleepers] = word;
    ct_add_seqcst(&p->sleepers, 1);
    ct_parker_unlock(p);
}

/* Worker: leave the stack on its own.  Returns 1 if it was still on it, 0 if a waker
   popped it first (it was woken, and owns the wake token). */
static inline int ct_parker_leave(ct_parker *p, uint32_t *word) {
    int32_t i, n;
    int was_idle;
    ct_parker_lock(p);
    was_idle = ct_load_seqcst(word) == CT_PARK_IDLE;
    if (was_idle) {
        n = p->sleepers;
        for (i = n - 1; i >= 0 && p->stack[i] != word; i--) {}
        CT_ASSERT(i >= 0);
        for (; i < n - 1; i++) p->stack[i] = p->stack[i + 1];
        ct_add_seqcst(&p->sleepers, -1);
    }
    ct_store_seqcst(word, CT_PARK_RUNNING);
    ct_parker_unlock(p);
    return was_idle;
}

/* Worker: sleep while the word says IDLE, at most timeout_ns (< 0: no limit). */
static inline void ct_parker_sleep(uint32_t *word, int64_t timeout_ns) {
    ct_futex_wait(word, CT_PARK_IDLE, timeout_ns);
}

/* Pop the most recent sleeper and wake it; 0 if the stack was empty.  Lock held. */
static inline int ct_parker_wake_top_locked(ct_parker *p, uint32_t **woken) {
    if (p->sleepers == 0) return 0;
    *woken = p->stack[p->sleepers - 1];
    ct_add_seqcst(&p->sleepers, -1);
    ct_store_seqcst(*woken, CT_PARK_WOKEN);
    return 1;
}

/* Producer side, after a push: wake one sleeper unless a wake is already in flight. */
static inline void ct_parker_notify_one(ct_parker *p) {
    uint32_t *woken;
    int ok;
    while (ct_load_seqcst(&p->sleepers) > 0 && ct_xchg_seqcst(&p->wake_pending, 1) == 0) {
        ct_parker_lock(p);
        ok = ct_parker_wake_top_locked(p, &woken);
        ct_parker_unlock(p);
        if (ok) {
            ct_futex_wake(woken, 1);
            return;
        }
        /* the sleepers left on their own meanwhile: give the token back, look again */
        ct_store_seqcst(&p->wake_pending, 0);
    }
}

/* Wake every sleeper (shutdown, worker retirement). */
static inline void ct_parker_notify_all(ct_parker *p) {
    uint32_t *woken;
    for (;;) {
        ct_parker_lock(p);
        int ok = ct_parker_wake_top_locked(p, &woken);
        ct_parker_unlock(p);
        if (!ok) return;
        ct_futex_wake(woken, 1);
    }
}

typedef struct {
    /* futex word, bumped (SEQ_CST) by a completer that saw waiters > 0 */
    CT_ALIGNED uint32_t seq;
    /* threads inside ct_waitset_wait: += / -= by the waiters (SEQ_CST) */
    int32_t waiters;
} ct_waitset;

/* Completer side, after storing a terminal status. */
static inline void ct_waitset_notify(ct_waitset *w) {
    if (ct_load_seqcst(&w->waiters) > 0) {
        ct_add_seqcst(&w->seq, 1);
        ct_futex_wake(&w->seq, INT_MAX);
    }
}

/* Wait until *status >= terminal_from or the deadline (CLOCK_MONOTONIC ns, < 0 for
   none) passes.  Returns 1 when the status is terminal, 0 on time-out, -1 when a signal
   interrupted the wait (the caller checks signals, then calls again).  Call without
   the GIL. */
static inline int ct_waitset_wait(ct_waitset *w, const int32_t *status, int32_t terminal_from,
                                  int64_t deadline_ns) {
    int done = 0;
    ct_add_seqcst(&w->waiters, 1);
    for (;;) {
        uint32_t s = ct_load_seqcst(&w->seq);
        if (ct_load_seqcst(status) >= terminal_from) { done = 1; break; }
        int64_t left = -1;
        if (deadline_ns >= 0) {
            left = deadline_ns - ct_now_ns();
            if (left <= 0) break;
        }
        if (ct_futex_wait(&w->seq, s, left)) { done = -1; break; }
    }
    ct_add_seqcst(&w->waiters, -1);
    return done;
}

#endif /* CT_PARK_H */
