/* Ring set-up and the slow (sleeping) paths; the fast paths are inline in
 * shm_ring.h. */
#include "shm/shm_ring.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

static bool is_power_of_two(uint32_t v)
{
	return v && !(v & (v - 1));
}

uint64_t shm_ring_bytes(uint32_t slots)
{
	/* control lines, slot table, one trailing guard line against prefetch. */
	return sizeof(struct shm_ring_ctrl) + (uint64_t)slots * SHM_SLOT_SIZE + SHM_CACHE_LINE;
}

void shm_ring_format(void *mem)
{
	struct shm_ring_ctrl *ctrl = mem;
	memset(ctrl, 0, sizeof(*ctrl));
	atomic_init(&ctrl->tail, 0);
	atomic_init(&ctrl->head, 0);
	atomic_init(&ctrl->consumer_sleeping, 0);
	atomic_init(&ctrl->producer_sleeping, 0);
}

int shm_ring_attach(struct shm_ring *r, void *mem, uint32_t slots, int wake_fd)
{
	if (!mem || !is_power_of_two(slots) || slots < SHM_RING_MIN_SLOTS || slots > SHM_RING_MAX_SLOTS)
		return -EINVAL;
	r->ctrl = mem;
	r->slots = (struct shm_slot *)((uint8_t *)mem + sizeof(struct shm_ring_ctrl));
	r->size = slots;
	r->mask = slots - 1;
	r->wake_fd = wake_fd;
	return 0;
}

void __shm_ring_wake_peer(struct shm_ring *r)
{
	if (r->wake_fd < 0)
		return;
	/* EAGAIN: the peer's socket already holds unread wake bytes, so it will
	 * wake anyway.  EPIPE: the peer is gone; its own death is reported by
	 * whoever sleeps next, so there is nothing useful to do here. */
	char byte = 1;
	(void)send(r->wake_fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

int shm_ring_drain_wakes(struct shm_ring *r)
{
	char buf[64];
	for (;;) {
		ssize_t got = recv(r->wake_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (got > 0)
			continue;
		if (got == 0)
			return -EPIPE;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == EINTR)
			continue;
		return errno == ECONNRESET ? -EPIPE : -errno;
	}
}

/* Sleep on the wake fd until a byte arrives, the peer hangs up, or timeout. */
static int sleep_on_wake_fd(struct shm_ring *r, int timeout_ms)
{
	if (r->wake_fd < 0) {
		/* No wake channel (tests): nap briefly and let the caller re-check. */
		usleep(timeout_ms >= 0 && timeout_ms < 1 ? 0 : 200);
		return 0;
	}
	struct pollfd pfd = { .fd = r->wake_fd, .events = POLLIN };
	int n = poll(&pfd, 1, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (n == 0)
		return 0;
	if (pfd.revents & POLLIN) {
		int drained = shm_ring_drain_wakes(r);
		if (drained < 0)
			return drained;
	}
	if (pfd.revents & (POLLHUP | POLLERR | POLLRDHUP))
		return -EPIPE;
	return 0;
}

typedef int64_t (*ring_count_fn)(const struct shm_ring *r);

/* The shared sleep protocol of both sides (see the header comment). */
static int wait_for(struct shm_ring *r, uint32_t want, int timeout_ms, ring_count_fn count,
		    _Atomic uint32_t *my_flag)
{
	if (want > r->size)
		return -EINVAL;
	for (;;) {
		int64_t have = count(r);
		if (have < 0)
			return (int)have;
		if (have >= want)
			return 1;
		atomic_store_explicit(my_flag, 1, memory_order_relaxed);
		/* F1: the flag must be visible before we re-read the peer's index. */
		atomic_thread_fence(memory_order_seq_cst);
		have = count(r);
		if (have < 0 || have >= want) {
			atomic_store_explicit(my_flag, 0, memory_order_relaxed);
			return have < 0 ? (int)have : 1;
		}
		int slept = sleep_on_wake_fd(r, timeout_ms);
		atomic_store_explicit(my_flag, 0, memory_order_relaxed);
		if (slept < 0) {
			/* A peer that published its last entries and exited hangs up
			 * right after: what it left in the ring still counts. */
			have = count(r);
			if (have >= want)
				return 1;
			return have < 0 ? (int)have : slept;
		}
		if (timeout_ms >= 0) {
			have = count(r);
			if (have < 0)
				return (int)have;
			return have >= want;
		}
	}
}

int shm_ring_wait_ready(struct shm_ring *r, uint32_t want, int timeout_ms)
{
	return wait_for(r, want, timeout_ms, shm_ring_ready_count, &r->ctrl->consumer_sleeping);
}

int shm_ring_wait_free(struct shm_ring *r, uint32_t want, int timeout_ms)
{
	return wait_for(r, want, timeout_ms, shm_ring_free_count, &r->ctrl->producer_sleeping);
}

int shm_ring_arm_consumer(struct shm_ring *r)
{
	int64_t have = shm_ring_ready_count(r);
	if (have != 0)
		return have < 0 ? (int)have : 0;
	atomic_store_explicit(&r->ctrl->consumer_sleeping, 1, memory_order_relaxed);
	/* F1, as in wait_for(). */
	atomic_thread_fence(memory_order_seq_cst);
	have = shm_ring_ready_count(r);
	if (have != 0) {
		atomic_store_explicit(&r->ctrl->consumer_sleeping, 0, memory_order_relaxed);
		return have < 0 ? (int)have : 0;
	}
	return 1;
}

void shm_ring_disarm_consumer(struct shm_ring *r)
{
	atomic_store_explicit(&r->ctrl->consumer_sleeping, 0, memory_order_relaxed);
}

int shm_ring_enqueue_all(struct shm_ring *r, const struct shm_slot *src, uint32_t n)
{
	while (n) {
		int put = shm_ring_enqueue(r, src, n, SHM_RING_VARIABLE);
		if (put < 0)
			return put;
		src += put;
		n -= (uint32_t)put;
		if (n) {
			int w = shm_ring_wait_free(r, 1, -1);
			if (w < 0)
				return w;
		}
	}
	return 0;
}
