/* ct_park.h - futex-based parking for idle workers and for threads that wait on
 * task completion.  Linux only (the futex syscall).
 *
 * Two structures:
 *
 * ct_parker - idle workers.  A worker that found every ring empty after its spin
 *   announces itself (sleepers += 1, SEQ_CST), then loops: read `seq`, look at the
 *   rings, take the wake token (exchange `wake_pending` with 0; if it was 1, look
 *   again instead of sleeping), sleep on `seq`.  A producer publishes its item
 *   (SEQ_CST store in ct_ring_push), then reads `sleepers` (SEQ_CST).  Either the
 *   producer sees the sleeper, or the sleeper's look sees the item: no lost wake-up.
 *   At most one wake-one is in flight (`wake_pending`): a producer that finds the
 *   token taken does not wake anybody.  That is safe because a token set at time t
 *   is followed by a `seq` bump: a sleeper that exchanged the token before t read
 *   `seq` before the bump, so its futex wait returns; a sleeper that exchanged it
 *   after t took it and looked again.  The worker that leaves with an item clears
 *   the token and, if work remains, passes the wake on.  No wake storms.
 *
 * ct_waitset - threads blocked in TaskHandle.result().  A completer stores the
 *   terminal status (SEQ_CST), then reads `waiters`; a waiter increments `waiters`
 *   (SEQ_CST), then reads the status.  Completions wake only when somebody waits.
 */
#ifndef CT_PARK_H
#define CT_PARK_H

#include <errno.h>
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

/* Sleep while *addr == expected, at most timeout_ns (< 0: no limit). */
static inline void ct_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
        tsp = &ts;
    }
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
}

static inline void ct_futex_wake(uint32_t *addr, int count) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline void ct_parker_futex_wake_all(uint32_t *addr) { ct_futex_wake(addr, INT_MAX); }

typedef struct {
    /* futex word: bumped (SEQ_CST) by every waker before FUTEX_WAKE, so a worker
       that read the old value never sleeps through a wake */
    CT_ALIGNED uint32_t seq;
    /* workers announced as about to sleep or sleeping: += / -= by workers (SEQ_CST),
       read by producers after publishing (SEQ_CST) */
    int32_t sleepers;
    /* 1 while a wake-one is in flight: set by exchange in the waker, cleared by the
       worker that leaves the sleep path; bounds wakes to one at a time */
    int32_t wake_pending;
} ct_parker;

/* Producer side, after a push: wake one sleeper unless a wake is already in flight. */
static inline void ct_parker_notify_one(ct_parker *p) {
    if (ct_load_seqcst(&p->sleepers) > 0 && ct_xchg_seqcst(&p->wake_pending, 1) == 0) {
        ct_add_seqcst(&p->seq, 1);
        ct_futex_wake(&p->seq, 1);
    }
}

/* Wake every sleeper (shutdown, worker retirement). */
static inline void ct_parker_notify_all(ct_parker *p) {
    ct_add_seqcst(&p->seq, 1);
    ct_futex_wake(&p->seq, INT_MAX);
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
   none) passes.  Returns 1 when the status is terminal, 0 on time-out.  Call without
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
        ct_futex_wait(&w->seq, s, left);
    }
    ct_add_seqcst(&w->waiters, -1);
    return done;
}

#endif /* CT_PARK_H */
