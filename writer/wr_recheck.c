#include "writer/wr_recheck.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "workers/wk_arena.h"
#include "stage/stage.h"
#include "stage/stage_extents.h"

void wr_recheck_changed(uint64_t first, uint64_t last)
{
	stage_die(STAGE_EXIT_FAILED,
		  "the guest changed while it was copied: stop it first, or give --dirty-log "
		  "(pages %llu..%llu differ from what was copied)",
		  (unsigned long long)first, (unsigned long long)last);
}

static void post_round_robin(struct shm_ring *back, uint32_t n_workers, uint32_t *next, struct proto_desc *d)
{
	struct shm_slot slot = proto_desc_pack(d);
	int rc = shm_ring_enqueue_all(&back[*next], &slot, 1);
	if (rc < 0)
		stage_die_ring(rc, "ring to worker");
	*next = (*next + 1) % n_workers;
}

int wr_recheck_by_workers(const struct shm_segment *seg, struct shm_ring *in, struct shm_ring *back, bool skip,
			  uint64_t *first, uint64_t *last)
{
	const uint32_t n_workers = seg->geo.n_workers;
	const uint64_t n_pages = seg->geo.guest_pages;
	uint32_t next = 0;
	const uint64_t page = seg->geo.page_size, size = n_pages * page;
	uint64_t pos = 0, data, hole;
	int found;
	/* Holes were never read by the workers (and reading one would allocate
	 * it): the same data extents as the scanner's, rounded to pages alike. */
	while (!skip && pos < size && (found = stage_next_data_extent(STAGE_FD_GUEST, pos, size, &data, &hole))) {
		if (found < 0)
			stage_die_errno(found, "finding the guest's data extents to check it did not change");
		uint64_t end = (hole + page - 1) / page;
		for (uint64_t q = data / page; q < end; q += seg->geo.max_run_pages) {
			uint64_t n = end - q < seg->geo.max_run_pages ? end - q : seg->geo.max_run_pages;
			struct proto_desc d = { .type = PROTO_DESC_RECHECK, .first_page = q, .n_pages = (uint32_t)n };
			post_round_robin(back, n_workers, &next, &d);
		}
		pos = end * page;
	}
	for (uint32_t i = 0; i < n_workers; i++) {
		struct proto_desc end = { .type = PROTO_DESC_RECHECK_END };
		post_round_robin(back, n_workers, &next, &end);
	}
	const struct proto_geometry geo = { .page_size = seg->geo.page_size, .max_run_pages = seg->geo.max_run_pages,
					    .guest_pages = n_pages };
	for (uint32_t i = 0; i < n_workers; i++) {
		struct shm_slot slot;
		int n;
		while ((n = shm_ring_dequeue(&in[i], &slot, 1, SHM_RING_VARIABLE)) == 0)
			if ((n = shm_ring_wait_ready(&in[i], 1, -1)) < 0)
				break;
		if (n < 0)
			stage_die_ring(n, "ring from worker");
		struct proto_desc d;
		bool valid = proto_desc_unpack(slot, &geo, WK_ARENA_BUFFERS, &d) == PROTO_OK;
		if (valid && d.type == PROTO_DESC_RESYNC)
			stage_die(STAGE_EXIT_FAILED, "worker %u was replaced during the final re-check, which cannot be "
						     "resumed", i);
		if (!valid || d.type != PROTO_DESC_RECHECKED)
			stage_die(STAGE_EXIT_FAILED, "worker %u: unexpected descriptor instead of the re-check's end", i);
	}
	if (skip)
		return 0;
	/* Every XOR of both passes happened before the RECHECKED we took with
	 * an acquire. */
	const _Atomic uint64_t *table = shm_segment_fingerprints(seg);
	for (uint64_t c = 0; c < seg->fp_chunks; c++)
		if (atomic_load_explicit(&table[c], memory_order_relaxed) != 0) {
			uint64_t end = (c + 1) * seg->fp_chunk_pages;
			*first = c * seg->fp_chunk_pages;
			*last = (end < n_pages ? end : n_pages) - 1;
			return 1;
		}
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wr_recheck_after_failure(const struct shm_segment *seg, struct shm_ring *in, struct shm_ring *back,
			      int timeout_ms, wr_recheck_drop_fn drop, void *ctx, const bool *already_ended)
{
	const struct proto_geometry geo = { .page_size = seg->geo.page_size, .max_run_pages = seg->geo.max_run_pages,
					    .guest_pages = seg->geo.guest_pages };
	bool ended[SHM_MAX_WORKERS] = { false };
	uint32_t n_ended = 0;
	for (uint32_t i = 0; i < seg->geo.n_workers; i++)
		if ((ended[i] = already_ended[i]))
			n_ended++;
	int64_t deadline = now_ms() + timeout_ms;
	while (n_ended < seg->geo.n_workers) {
		int handled = 0;
		for (uint32_t i = 0; i < seg->geo.n_workers; i++) {
			if (ended[i])
				continue;
			/* DONE: the failure came after the re-check, which passed. */
			if (atomic_load_explicit(&shm_segment_stats(seg, SHM_STATS_WORKER0 + i)->v[SHM_STAT_STATE],
						 memory_order_relaxed) == SHM_PROC_DONE)
				return;
			struct shm_slot batch[64];
			int n = shm_ring_dequeue(&in[i], batch, 64, SHM_RING_VARIABLE);
			if (n < 0)
				return; /* a worker went away: nothing to conclude */
			handled += n;
			for (int k = 0; k < n; k++) {
				struct proto_desc d;
				if (proto_desc_unpack(batch[k], &geo, WK_ARENA_BUFFERS, &d) != PROTO_OK)
					return;
				if (d.type == PROTO_DESC_END) {
					/* It now waits for the re-check's runs. */
					ended[i] = true;
					n_ended++;
				}
				if (d.type == PROTO_DESC_RESYNC)
					return; /* a replacement: it would wait for an answer */
				drop(ctx, i, &d);
			}
		}
		if (handled == 0) {
			if (now_ms() > deadline)
				return;
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
		}
	}
	uint64_t first = 0, last = 0;
	if (wr_recheck_by_workers(seg, in, back, false, &first, &last) > 0)
		wr_recheck_changed(first, last);
}
