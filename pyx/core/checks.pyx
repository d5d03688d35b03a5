# Argument checks of the native entry points: name the argument, never crash.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

# ---------------------------------------------------------------------------
# Argument checks for values that end up in C fields (a bare OverflowError or a
# wrapped-around C int would name nothing, or index past an array)

cdef int INT32_LIMIT = 2147483647


cdef int _check_c_int(value, str name, int lo, int hi) except? -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected int for {name}, got {type(value).__name__}: {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"Expected {name} between {lo} and {hi}, got {value!r}")
    return value


cdef double _check_seconds(value, str name) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Expected int or float for {name}, got {type(value).__name__}: {value!r}")
    if not value >= 0:   # also NaN
        raise ValueError(f"Expected {name} >= 0, got {value!r}")
    try:
        return value
    except OverflowError:   # an int past the largest double
        raise ValueError(f"Expected {name} <= {sys.float_info.max:g}, got {value!r}") from None


cdef int64_t _wait_deadline(timeout) except? -2:
    """The futex deadline (ns) for a wait of `timeout` s: -1 waits without limit.

    Checked before anything else, so a bad timeout fails the same way whether or
    not the task is already done.
    """
    cdef double t
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"Expected int, float or None for timeout, got {type(timeout).__name__}: "
            f"{timeout!r}")
    if not timeout >= 0:   # also NaN
        raise ValueError(f"Expected timeout >= 0 or None, got {timeout!r}")
    if timeout > 1e9:      # ~31 years: past int64 nanoseconds soon after, so no limit at all
        return -1
    t = timeout
    return ct_now_ns() + <int64_t>(t * 1e9)


cdef extern from "Python.h":
    ctypedef struct PyCodeObject:
        int co_flags
    ctypedef struct PyTypeObject:
        pass
    PyObject *PyFunction_GET_CODE(object op)
    PyObject *PyMethod_GET_FUNCTION(object op)
    PyTypeObject *Py_TYPE(object op)
    # static type objects: comparing pointers costs no module-global lookup
    PyTypeObject PyFunction_Type
    PyTypeObject PyMethod_Type
    PyTypeObject PyGen_Type
    PyTypeObject PyAsyncGen_Type

cdef enum:
    CO_GENERATOR = 0x20
    CO_ASYNC_GENERATOR = 0x200


cdef inline bint _is_generator_function(object fn):
    """True for a (bound) generator or async-generator function: a few loads, no
    attribute lookups, since every submit asks.  Other callables that return a
    generator are caught when they run (_run_python)."""
    cdef PyObject *f = <PyObject *>fn
    if Py_TYPE(fn) == &PyMethod_Type:
        f = PyMethod_GET_FUNCTION(fn)
    if Py_TYPE(<object>f) != &PyFunction_Type:
        return False   # None (a native task without fallback) too
    return ((<PyCodeObject *>PyFunction_GET_CODE(<object>f)).co_flags
            & (CO_GENERATOR | CO_ASYNC_GENERATOR)) != 0
