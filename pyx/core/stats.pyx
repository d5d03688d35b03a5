# Per-worker accounting and the latency histogram.
#
# Included by pyx/_core.pyx (one extension module: every part is compiled
# together and calls the others directly); not compiled on its own.

cdef extern from *:
    int __builtin_clzll(unsigned long long) noexcept nogil


cdef inline int hist_bucket(int64_t ns) noexcept nogil:
    """Bucket of a duration: 4 sub-buckets per power of two, so p99 is within ~19%."""
    cdef uint64_t v = <uint64_t>ns if ns > 0 else 1
    cdef int msb = 63 - __builtin_clzll(v)
    cdef int sub
    if msb < 2:
        return <int>v
    sub = <int>((v >> (msb - 2)) & 3)
    return min(msb * 4 + sub, HIST_BUCKETS - 1)


cdef inline double bucket_upper_ns(int b) noexcept nogil:
    cdef int msb = b // 4
    cdef int sub = b % 4
    if msb < 2:
        return <double>(b + 1)
    return <double>((<uint64_t>(4 + sub + 1)) << (msb - 2))


cdef double _percentile(uint64_t *hist, uint64_t total, double q) noexcept:
    cdef uint64_t rank, seen = 0
    cdef int b
    if total == 0:
        return 0.0
    rank = <uint64_t>(q * total)
    if rank >= total:
        rank = total - 1
    for b in range(HIST_BUCKETS):
        seen += hist[b]
        if seen > rank:
            return bucket_upper_ns(b)
    return bucket_upper_ns(HIST_BUCKETS - 1)


cdef inline void _account(Core self, ct_worker *w, int64_t ns, bint failed) noexcept nogil:
    # single writer (the slot's worker; the inline slot runs under the GIL)
    ct_bump_i64(&w.processed, 1)
    if failed:
        ct_bump_i64(&w.failed, 1)
    ct_bump_i64(&w.busy_ns, ns)
    ct_bump_i64(&w.exec_ns_sum, ns)
    w.hist[hist_bucket(ns)] += 1


cdef void _account_cancel(Core self) noexcept:
    self._cancelled_count += 1


cdef void _account_failed_outside(Core self) noexcept:
    self._failed_outside += 1


cdef void _account_succeeded(Core self) noexcept:
    self._succeeded_outside += 1


cdef object _core_stats_impl(Core self):
    """Raw counters for EngineStats: a dict of ints and floats."""
    cdef int i, b
    cdef int64_t processed = 0, failed = 0, busy = 0, exec_sum = 0, succeeded = 0
    cdef int64_t now = ct_now_ns()
    cdef int active = 0
    cdef uint64_t hist[HIST_BUCKETS]
    cdef uint64_t total = 0
    cdef ct_worker *w
    memset(hist, 0, sizeof(hist))
    for i in range(MAX_WORKER_SLOTS):
        w = &self._workers[i]
        processed += ct_load_i64(&w.processed)
        failed += ct_load_i64(&w.failed)
        succeeded += ct_load_i64(&w.succeeded)
        busy += ct_load_i64(&w.busy_ns)
        exec_sum += ct_load_i64(&w.exec_ns_sum)
        if ct_load_i32(&w.alive) and ct_load_i64(&w.task_started_ns) != 0:
            active += 1
        for b in range(HIST_BUCKETS):
            hist[b] += w.hist[b]
    for b in range(HIST_BUCKETS):
        total += hist[b]
    return {
        "queue_sizes": tuple(ct_ring_size(&self._rings[i]) for i in range(N_LEVELS)),
        "total_workers": ct_load_i32(&self._live_workers),
        "active_workers": active,
        "processed": processed,
        "failed": failed + self._failed_outside,
        "succeeded": succeeded + self._succeeded_outside,
        "cancelled": self._cancelled_count,
        "busy_ns": busy,
        "avg_ns": exec_sum / total if total else 0.0,
        "p95_ns": _percentile(hist, total, 0.95),
        "p99_ns": _percentile(hist, total, 0.99),
        "uptime_ns": now - self._started_ns,
        "submitted": self._next_id - 1,
        "stuck_workers": _stuck_workers(self),
        "spawn_failures": self._spawn_failures,
    }
