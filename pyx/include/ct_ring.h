/* ct_ring.h - bounded multi-producer multi-consumer ring buffer.
 *
 * Dmitry Vyukov's sequence-numbered cells: each cell carries a sequence number that
 * says whose turn it is.  A producer may write cell i when cell.seq == pos (the
 * enqueue ticket), a consumer may read it when cell.seq == pos + 1.  Producers race
 * only on enqueue_pos, consumers only on dequeue_pos, each with one CAS; there is
 * no lock and no allocation after creation.
 *
 * Ordering, stated once here and relied on at every call site:
 *   - the producer writes cell.data, then publishes it with a SEQ_CST store of
 *     cell.seq (pos + 1).  SEQ_CST (not just RELEASE) because the producer next
 *     reads the parking lot's sleeper count, and that load must not move before
 *     the publication (the Dekker pattern in ct_park.h).
 *   - the consumer reads cell.seq with ACQUIRE before reading cell.data, and hands
 *     the cell back with a SEQ_CST store of pos + capacity.  SEQ_CST for the same
 *     reason: the consumer next reads the count of producers waiting for space.
 * A producer preempted between its CAS and its publishing store makes consumers
 * see "empty" at that cell until it resumes; it then runs its wake check, so the
 * item is never stranded.
 */
#ifndef CT_RING_H
#define CT_RING_H

#include <stdlib.h>
#include "ct_atomic.h"

typedef struct {
    size_t seq;   /* turn marker: written by the owner of the turn (see above) */
    void *data;   /* plain: ordered by seq's release/acquire pair */
} ct_cell;

typedef struct {
    /* producers' ticket: CAS by producers only, RELAXED (the cell's seq orders data) */
    CT_ALIGNED size_t enqueue_pos;
    /* consumers' ticket: CAS by consumers only, RELAXED */
    CT_ALIGNED size_t dequeue_pos;
    /* immutable after ct_ring_init: safe to read from any thread without atomics */
    CT_ALIGNED ct_cell *cells;
    size_t mask;
} ct_ring;

/* Capacity is rounded up to a power of two >= 2.  Returns 0 on success, -1 on ENOMEM. */
static inline int ct_ring_init(ct_ring *r, size_t capacity) {
    size_t cap = 2, i;
    while (cap < capacity) cap <<= 1;
    r->cells = (ct_cell *)aligned_alloc(CT_CACHELINE,
                                        ((cap * sizeof(ct_cell) + CT_CACHELINE - 1) /
                                         CT_CACHELINE) * CT_CACHELINE);
    if (r->cells == NULL) return -1;
    for (i = 0; i < cap; i++) {
        r->cells[i].seq = i;
        r->cells[i].data = NULL;
    }
    r->mask = cap - 1;
    r->enqueue_pos = 0;
    r->dequeue_pos = 0;
    return 0;
}

static inline void ct_ring_free(ct_ring *r) {
    free(r->cells);
    r->cells = NULL;
}

static inline size_t ct_ring_capacity(const ct_ring *r) { return r->mask + 1; }

/* Returns 1 when `data` was queued, 0 when the ring is full.  Never blocks. */
static inline int ct_ring_push(ct_ring *r, void *data) {
    ct_cell *cell;
    size_t pos = ct_load_relaxed(&r->enqueue_pos);
    CT_ASSERT(data != NULL);
    for (;;) {
        cell = &r->cells[pos & r->mask];
        size_t seq = ct_load_acquire(&cell->seq);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->enqueue_pos, &pos, pos + 1, 1,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                break;
        } else if (dif < 0) {
            return 0;
        } else {
            pos = ct_load_relaxed(&r->enqueue_pos);
        }
    }
    cell->data = data;
    ct_store_seqcst(&cell->seq, pos + 1);
    return 1;
}

/* Returns the oldest item, or NULL when the ring is (momentarily) empty. */
static inline void *ct_ring_pop(ct_ring *r) {
    ct_cell *cell;
    void *data;
    size_t pos = ct_load_relaxed(&r->dequeue_pos);
    for (;;) {
        cell = &r->cells[pos & r->mask];
        size_t seq = ct_load_acquire(&cell->seq);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->dequeue_pos, &pos, pos + 1, 1,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                break;
        } else if (dif < 0) {
            return NULL;
        } else {
            pos = ct_load_relaxed(&r->dequeue_pos);
        }
    }
    data = cell->data;
    CT_ASSERT(data != NULL);
    ct_store_seqcst(&cell->seq, pos + r->mask + 1);
    return data;
}

/* A snapshot for stats: may be stale by the time it returns, never negative. */
static inline size_t ct_ring_size(const ct_ring *r) {
    size_t deq = ct_load_relaxed(&r->dequeue_pos);
    size_t enq = ct_load_relaxed(&r->enqueue_pos);
    return enq > deq ? enq - deq : 0;
}

#endif /* CT_RING_H */
