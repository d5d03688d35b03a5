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

typedef struct {
    /* the TaskHandle that owns this call: a strong reference held while the call is
       queued or running, released by the worker under the GIL after completion */
    PyObject *owner;
    ct_native_fn fn;           /* immutable after submit */
    /* the handle's status for native tasks: CAS/stores SEQ_CST by the worker, by
       cancel() and by completions, read SEQ_CST by waiters (see ct_park.h) */
    int32_t status;
    /* fn's return code: written by the worker before its SEQ_CST status store,
       which publishes it together with `result` */
    int32_t rc;
    int32_t nargs;             /* immutable after submit */
    ct_slot result;            /* written by the worker, published by `status` */
    ct_slot args[CT_MAX_NATIVE_ARGS];  /* immutable after submit */
} ct_ncall;

#endif /* CT_NATIVE_H */
