/* ct_atomic.h - the few atomic operations the core uses, as GCC/Clang builtins.
 *
 * Each wrapper names its memory order so the call sites read as the invariant they
 * rely on.  Plain fields touched by more than one thread are only ever accessed
 * through these wrappers.
 */
#ifndef CT_ATOMIC_H
#define CT_ATOMIC_H

#include <stdint.h>
#include <stddef.h>
#include <assert.h>

#define CT_CACHELINE 64
#define CT_ALIGNED __attribute__((aligned(CT_CACHELINE)))

#if CYTASK_DEBUG
#define CT_ASSERT(x) assert(x)
#else
#define CT_ASSERT(x) ((void)0)
#endif

static inline void ct_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#define ct_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ct_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ct_load_seqcst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define ct_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ct_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ct_store_seqcst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ct_add_relaxed(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define ct_add_seqcst(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define ct_xchg_seqcst(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

#define ct_xchg_acquire(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)
/* Weak compare-and-swap that publishes (release) what was written before it; on
   failure *expected_p is updated to the current value.  For retry loops. */
#define ct_cas_weak_release(p, expected_p, desired) \
    __atomic_compare_exchange_n((p), (expected_p), (desired), 1, __ATOMIC_RELEASE, \
                                __ATOMIC_RELAXED)

/* Compare-and-swap; returns 1 when *p held `expected` and now holds `desired`. */
static inline int ct_cas_i32(int32_t *p, int32_t expected, int32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline int64_t ct_load_i64(const int64_t *p) { return ct_load_relaxed(p); }
static inline void ct_store_i64(int64_t *p, int64_t v) { ct_store_relaxed(p, v); }
static inline int32_t ct_load_i32(const int32_t *p) { return ct_load_seqcst(p); }
static inline void ct_store_i32(int32_t *p, int32_t v) { ct_store_seqcst(p, v); }
static inline int32_t ct_xchg_i32(int32_t *p, int32_t v) { return ct_xchg_seqcst(p, v); }
static inline int32_t ct_add_i32(int32_t *p, int32_t v) { return ct_add_seqcst(p, v); }
static inline int64_t ct_add_i64(int64_t *p, int64_t v) { return ct_add_relaxed(p, v); }
/* A counter with ONE writer: a relaxed load and store, no locked instruction.  Readers
   on other threads see whole values (aligned 8-byte accesses), possibly stale. */
static inline void ct_bump_i64(int64_t *p, int64_t v) {
    ct_store_relaxed(p, ct_load_relaxed(p) + v);
}

#endif /* CT_ATOMIC_H */
