/* ct_native.h - the native task ABI: how the core calls compiled code without the GIL.
 *
 * A native task is a C function that takes its arguments as packed 8-byte slots and
 * writes one slot of result:
 *
 *     int32_t fn(const ct_slot *args, ct_slot *result);
 *
 * It returns CT_RC_OK, or one of the codes below, which the Python side turns into
 * the exception the Python function would have raised.  CT_RC_PYTHON asks the core
 * to run this one call with the Python function instead (for example when int64
 * arithmetic would have overflowed where Python's ints would not).
 */
#ifndef CT_NATIVE_H
#define CT_NATIVE_H

#include <stdint.h>
#include <Python.h>
#include "ct_atomic.h"

#define CT_MAX_NATIVE_ARGS 8

#define CT_RC_OK 0
#define CT_RC_ZERO_DIVISION 1
#define CT_RC_PYTHON 2
#define CT_RC_INDEX 3
#define CT_RC_VALUE 4

typedef union {
    int64_t i;
    double d;
} ct_slot;

typedef int32_t (*ct_native_fn)(const ct_slot *args, ct_slot *result);

typedef struct ct_ncall {
    /* the TaskHandle that owns this call: a strong reference held while the call is
       queued or running, released under the GIL after completion by whoever does
       its bookkeeping (its worker, or a GIL holder emptying ct_finished) */
    PyObject *owner;
    ct_native_fn fn;           /* immutable after submit */
    /* the handle's status for native tasks: CAS/stores SEQ_CST by the worker, by
       cancel() and by completions, read SEQ_CST by waiters (see ct_park.h) */
    int32_t status;
    /* fn's return code: written by the worker before its SEQ_CST status store,
       which publishes it together with `result` */
    int32_t rc;
    int32_t nargs;             /* immutable after submit */
    /* 1 once the handle has a done-callback: stored SEQ_CST by add_done_callback
       before it loads `status`, loaded SEQ_CST by the worker after its status store
       (a Dekker pair).  A worker that reads 0 knows the handle's callback list is
       empty and stays so (a later add_done_callback sees the terminal status and runs
       its callback at once), so the call may be published to ct_finished; with 1 the
       worker finishes the call itself, and the callbacks run on the thread that
       finished the task, never inside some other thread's submit(). */
    int32_t callbacks;
    ct_slot result;            /* written by the worker, published by `status` */
    ct_slot args[CT_MAX_NATIVE_ARGS];  /* immutable after submit */
    /* the next call of a chain in ct_finished: written by the worker that owns the
       chain before the CAS that publishes it, read after the exchange that takes it */
    struct ct_ncall *next;
} ct_ncall;

/* ct_finished - native calls that ran, waiting for a thread that holds the GIL to
 * drop the queue's reference to their handle.  None of them has a done-callback
 * (see ct_ncall.callbacks): the GIL holder runs no user code for them.
 *
 * Workers never wait for the GIL just for that bookkeeping: a worker publishes a
 * chain of its finished calls with one CAS and goes on, and whoever holds the GIL
 * next (a producer submitting, a worker starting a Python section, an idle worker)
 * takes the whole stack with one exchange.  No thread ever pops a single node, so
 * there is no ABA.  A call's status, result and rc are published (SEQ_CST) before its
 * chain is pushed; the push is a release and the take an acquire.
 */
typedef struct {
    /* the newest chain's first call, or NULL: CAS (release) by workers pushing,
       exchange to NULL (acquire) by the GIL holder taking it */
    ct_ncall *head;
} ct_finished;

/* Publish the chain first..last (linked by `next`, last's about to be set). */
static inline void ct_finished_push(ct_finished *f, ct_ncall *first, ct_ncall *last) {
    ct_ncall *old = ct_load_relaxed(&f->head);
    do {
        last->next = old;
    } while (!ct_cas_weak_release(&f->head, &old, first));
}

/* A worker's record of the calls it holds, for a fork child (ct_worker.native, .held,
   .nheld): release stores, so that a child whose snapshot shows a count or a cleared
   slot also shows the stores made before it (a plain store may be moved by the
   compiler).  Nothing but _reset_after_fork_impl reads them. */
static inline void ct_store_release_i32(int32_t *p, int32_t v) {
    ct_store_release(p, v);
}

static inline void ct_store_release_ncall(ct_ncall **p, ct_ncall *v) {
    ct_store_release(p, v);
}

/* Take every published call (newest chain first), leaving the stack empty. */
static inline ct_ncall *ct_finished_take(ct_finished *f) {
    return ct_xchg_acquire(&f->head, (ct_ncall *)NULL);
}

static inline int ct_finished_any(const ct_finished *f) {
    return ct_load_relaxed(&f->head) != NULL;
}

#endif /* CT_NATIVE_H */
