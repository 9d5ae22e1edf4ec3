/* Single-producer/single-consumer ring between two processes.
 *
 * Synchronisation table (urcu style): which calls may run at the same time.
 *
 *                  | enqueue/reserve/commit | dequeue | wait_* / wake
 *   producer side  | one thread only        |   -     | producer's own
 *   consumer side  |   -                    | one thread only | consumer's own
 *   producer vs consumer: everything may run concurrently.
 *
 * Memory ordering: exactly two release/acquire pairs per ring.
 *   R0 (producer store-release tail)  pairs with  A0 (consumer load-acquire tail):
 *       slot contents written before R0 are visible after A0.
 *   R1 (consumer store-release head)  pairs with  A1 (producer load-acquire head):
 *       the consumer has finished reading slots before the producer reuses them.
 * Each side loads its own index relaxed: nobody else writes it.
 *
 * Sleeping (no lost wake-ups): the sleeper sets its *_sleeping flag, issues a
 * full fence (F1), re-checks the ring, and only then blocks on its wake fd.
 * The other side publishes its index, issues a full fence (F2), and reads the
 * flag; if set it writes one byte to the wake fd.  Either the sleeper's
 * re-check sees the new index, or the waker sees the flag: F1/F2 forbid both
 * missing (store-buffer litmus).
 *
 * The wake fd is one end of a socketpair whose other end the peer holds.  A
 * peer that exits or is killed closes its end, so a sleeper wakes with
 * POLLHUP and reports -EPIPE instead of hanging.
 */
#ifndef PF_SHM_RING_H
#define PF_SHM_RING_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "shm/shm_layout.h"

enum shm_ring_behavior {
	SHM_RING_FIXED,		/* bulk: all n or nothing */
	SHM_RING_VARIABLE,	/* burst: as many as possible */
};

/* Process-private view of a ring.  Geometry is cached here, never re-read. */
struct shm_ring {
	struct shm_ring_ctrl *ctrl;
	struct shm_slot *slots;
	uint32_t size;
	uint32_t mask;
	int wake_fd;		/* our end of the peer socketpair, or -1 (poll only) */
};

/* Lay out a fresh ring in memory the caller owns (both indices zero). */
void shm_ring_format(void *mem);
/* Bytes a ring of `slots` slots occupies (control + slots + a guard line). */
uint64_t shm_ring_bytes(uint32_t slots);
/* Bind a private view to a formatted ring; -EINVAL on a bad size. */
int shm_ring_attach(struct shm_ring *r, void *mem, uint32_t slots, int wake_fd);

/* Producer ---------------------------------------------------------------- */

/* Free slots, or -EPROTO when the peer's index is impossible. */
static inline int64_t shm_ring_free_count(const struct shm_ring *r)
{
	uint32_t tail = atomic_load_explicit(&r->ctrl->tail, memory_order_relaxed);
	/* A1 pairs with R1 in shm_ring_dequeue(): slots up to head are free. */
	uint32_t head = atomic_load_explicit(&r->ctrl->head, memory_order_acquire);
	uint32_t used = tail - head;
	if (used > r->size)
		return -EPROTO;
	return (int64_t)(r->size - used);
}

void __shm_ring_wake_peer(struct shm_ring *r); /* internal: write one wake byte */

static inline void __shm_ring_publish_tail(struct shm_ring *r, uint32_t new_tail)
{
	/* R0 pairs with A0 in shm_ring_dequeue(): slots are filled before tail moves. */
	atomic_store_explicit(&r->ctrl->tail, new_tail, memory_order_release);
	/* F2: the tail store must be visible before we read consumer_sleeping. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&r->ctrl->consumer_sleeping, memory_order_relaxed))
		__shm_ring_wake_peer(r);
}

/* Enqueue n slots.  Returns the number enqueued (0..n; with FIXED 0 or n) or
 * -EPROTO when the consumer's index is impossible. */
static inline int shm_ring_enqueue(struct shm_ring *r, const struct shm_slot *src, uint32_t n,
				   enum shm_ring_behavior how)
{
	int64_t free_slots = shm_ring_free_count(r);
	if (free_slots < 0)
		return (int)free_slots;
	if (n > free_slots) {
		if (how == SHM_RING_FIXED)
			return 0;
		n = (uint32_t)free_slots;
	}
	if (n == 0)
		return 0;
	uint32_t tail = atomic_load_explicit(&r->ctrl->tail, memory_order_relaxed);
	uint32_t idx = tail & r->mask;
	uint32_t first = r->size - idx;
	if (first > n)
		first = n;
	memcpy(&r->slots[idx], src, first * sizeof(*src));
	memcpy(&r->slots[0], src + first, (n - first) * sizeof(*src));
	__shm_ring_publish_tail(r, tail + n);
	return (int)n;
}

/* Zero-copy production: reserve up to n slots and write them in place.
 * *first points at `*n_first` contiguous slots, *second at the rest (wrap).
 * Returns the count reserved (0 when full) or -EPROTO.  Nothing is visible to
 * the consumer until shm_ring_commit(). */
static inline int shm_ring_reserve(struct shm_ring *r, uint32_t n, enum shm_ring_behavior how,
				   struct shm_slot **first, uint32_t *n_first,
				   struct shm_slot **second)
{
	int64_t free_slots = shm_ring_free_count(r);
	if (free_slots < 0)
		return (int)free_slots;
	if (n > free_slots) {
		if (how == SHM_RING_FIXED)
			return 0;
		n = (uint32_t)free_slots;
	}
	uint32_t tail = atomic_load_explicit(&r->ctrl->tail, memory_order_relaxed);
	uint32_t idx = tail & r->mask;
	uint32_t contiguous = r->size - idx;
	*first = &r->slots[idx];
	*n_first = n < contiguous ? n : contiguous;
	*second = &r->slots[0];
	return (int)n;
}

/* Publish n slots of the last reservation (n may be less than reserved). */
static inline void shm_ring_commit(struct shm_ring *r, uint32_t n)
{
	uint32_t tail = atomic_load_explicit(&r->ctrl->tail, memory_order_relaxed);
	if (n == 0)
		return;
	__shm_ring_publish_tail(r, tail + n);
}

/* Consumer ---------------------------------------------------------------- */

/* Slots ready to read, or -EPROTO when the producer's index is impossible. */
static inline int64_t shm_ring_ready_count(const struct shm_ring *r)
{
	uint32_t head = atomic_load_explicit(&r->ctrl->head, memory_order_relaxed);
	/* A0 pairs with R0 in __shm_ring_publish_tail(): slot contents are visible. */
	uint32_t tail = atomic_load_explicit(&r->ctrl->tail, memory_order_acquire);
	uint32_t used = tail - head;
	if (used > r->size)
		return -EPROTO;
	return used;
}

/* Copy up to n ready slots into dst (a private copy: validate it, never the
 * ring) without releasing them.  Returns the count (with FIXED 0 or n) or
 * -EPROTO.  A consumer that may be replaced mid-way (a worker, an inflater)
 * peeks, publishes what the slots caused, and only then releases them: a
 * replacement finds every slot whose effect was not published still there. */
static inline int shm_ring_peek(struct shm_ring *r, struct shm_slot *dst, uint32_t n,
				enum shm_ring_behavior how)
{
	int64_t ready = shm_ring_ready_count(r);
	if (ready < 0)
		return (int)ready;
	if (n > ready) {
		if (how == SHM_RING_FIXED)
			return 0;
		n = (uint32_t)ready;
	}
	if (n == 0)
		return 0;
	uint32_t head = atomic_load_explicit(&r->ctrl->head, memory_order_relaxed);
	uint32_t idx = head & r->mask;
	uint32_t first = r->size - idx;
	if (first > n)
		first = n;
	memcpy(dst, &r->slots[idx], first * sizeof(*dst));
	memcpy(dst + first, &r->slots[0], (n - first) * sizeof(*dst));
	return (int)n;
}

/* Release the first n slots, which the caller peeked. */
static inline void shm_ring_release(struct shm_ring *r, uint32_t n)
{
	if (n == 0)
		return;
	uint32_t head = atomic_load_explicit(&r->ctrl->head, memory_order_relaxed);
	/* R1 pairs with A1 in shm_ring_free_count(): we are done reading the slots. */
	atomic_store_explicit(&r->ctrl->head, head + n, memory_order_release);
	/* F2 (consumer side): head visible before we read producer_sleeping. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&r->ctrl->producer_sleeping, memory_order_relaxed))
		__shm_ring_wake_peer(r);
}

/* Peek and release at once: up to n slots, the count or -EPROTO. */
static inline int shm_ring_dequeue(struct shm_ring *r, struct shm_slot *dst, uint32_t n,
				   enum shm_ring_behavior how)
{
	int got = shm_ring_peek(r, dst, n, how);
	if (got > 0)
		shm_ring_release(r, (uint32_t)got);
	return got;
}

/* Sleeping ---------------------------------------------------------------- */

/* Block until at least `want` slots are ready (consumer) or free (producer),
 * or timeout_ms passes (-1: no timeout).  Returns 1 when the condition holds,
 * 0 on timeout, -EPIPE when the peer is gone, -EPROTO on impossible indices,
 * or another -errno from poll. */
int shm_ring_wait_ready(struct shm_ring *r, uint32_t want, int timeout_ms);
int shm_ring_wait_free(struct shm_ring *r, uint32_t want, int timeout_ms);

/* Enqueue all n slots, sleeping while the ring is full.  0, or -EPIPE /
 * -EPROTO / -errno as for the wait calls. */
int shm_ring_enqueue_all(struct shm_ring *r, const struct shm_slot *src, uint32_t n);

/* For a process that sleeps on several rings at once: arm returns 1 if it
 * may sleep (flag set, fence done, still nothing to do), 0 if there is work
 * now (flag cleared again), or -EPROTO.  After poll() returns, disarm. */
int shm_ring_arm_consumer(struct shm_ring *r);
void shm_ring_disarm_consumer(struct shm_ring *r);
/* Drain pending wake bytes; -EPIPE if the peer closed its end. */
int shm_ring_drain_wakes(struct shm_ring *r);

#endif
