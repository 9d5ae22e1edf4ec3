/* pageferry-scanner: walks the guest file and posts page runs to the workers.
 *
 * fds: 3 control segment, 4 guest (read-only),
 *      5 + i  wake socket of ring scanner -> worker i (i < n_workers)
 *
 * Holes in the guest file (never written) are found with SEEK_DATA/SEEK_HOLE
 * and skipped without being read: reading them would make the kernel
 * allocate memory for them.  The rest goes out in runs of at most
 * max_run_pages, round-robin over the workers, skipping a worker whose ring
 * is full so one slow worker does not stall the others.
 */
#include <errno.h>
#include <unistd.h>

#include "protocol/proto_desc.h"
#include "stage/stage.h"

struct scanner {
	struct shm_segment seg;
	struct shm_ring rings[SHM_MAX_WORKERS];
	struct shm_stats *stats;
	uint32_t n_workers;
	uint32_t next;
};

static void post_run(struct scanner *s, uint64_t first_page, uint32_t n_pages)
{
	struct proto_desc d = { .type = PROTO_DESC_RUN, .first_page = first_page, .n_pages = n_pages };
	struct shm_slot slot = proto_desc_pack(&d);
	for (;;) {
		for (uint32_t k = 0; k < s->n_workers; k++) {
			uint32_t w = (s->next + k) % s->n_workers;
			int put = shm_ring_enqueue(&s->rings[w], &slot, 1, SHM_RING_FIXED);
			if (put < 0)
				stage_die_ring(put, "ring to worker");
			if (put == 1) {
				s->next = (w + 1) % s->n_workers;
				return;
			}
		}
		/* Every ring is full: sleep on the next one in turn, briefly, then
		 * look at all of them again. */
		int rc = shm_ring_wait_free(&s->rings[s->next], 1, 20);
		if (rc < 0)
			stage_die_ring(rc, "ring to worker");
	}
}

static void post_extent(struct scanner *s, uint64_t first, uint64_t end_page)
{
	uint32_t run = s->seg.geo.max_run_pages;
	while (first < end_page) {
		uint64_t n = end_page - first < run ? end_page - first : run;
		post_run(s, first, (uint32_t)n);
		stage_stat_add(s->stats, SHM_STAT_PAGES, n);
		stage_stat_add(s->stats, SHM_STAT_RUNS, 1);
		first += n;
	}
}

/* Next data extent at or after `pos`, in bytes; returns 0 at the end. */
static int next_extent(uint64_t pos, uint64_t size, uint64_t *data, uint64_t *hole)
{
	off_t d = lseek(STAGE_FD_GUEST, (off_t)pos, SEEK_DATA);
	if (d < 0 && errno == ENXIO)
		return 0;
	if (d < 0 && errno == EINVAL) { /* no hole support: everything is data */
		*data = pos;
		*hole = size;
		return 1;
	}
	if (d < 0)
		stage_die_errno(-errno, "lseek(SEEK_DATA) in guest at %llu", (unsigned long long)pos);
	off_t h = lseek(STAGE_FD_GUEST, d, SEEK_HOLE);
	if (h < 0)
		stage_die_errno(-errno, "lseek(SEEK_HOLE) in guest at %lld", (long long)d);
	*data = (uint64_t)d;
	*hole = (uint64_t)h < size ? (uint64_t)h : size;
	return 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	struct scanner s = { 0 };
	stage_set_name("scanner", -1);
	stage_attach_segment(&s.seg);
	s.n_workers = s.seg.geo.n_workers;
	s.stats = shm_segment_stats(&s.seg, SHM_STATS_SCANNER);
	for (uint32_t i = 0; i < s.n_workers; i++)
		stage_ring(&s.seg, SHM_RING_SCAN_TO_WORKER, i, STAGE_FD_ROLE + (int)i, &s.rings[i]);
	stage_lockdown(SB_ROLE_SCANNER, STAGE_FD_ROLE + (int)s.n_workers - 1, 0);
	stage_stat_set(s.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	const uint64_t page = s.seg.geo.page_size;
	const uint64_t size = s.seg.geo.guest_pages * page;
	uint64_t pos = 0, data, hole;
	while (pos < size && next_extent(pos, size, &data, &hole)) {
		/* Extents are byte ranges; a page is data if any byte of it is. */
		uint64_t first = data / page, end = (hole + page - 1) / page;
		if (first * page > pos)
			stage_stat_add(s.stats, SHM_STAT_HOLE_PAGES, first - pos / page);
		post_extent(&s, first, end);
		pos = end * page;
	}
	if (pos < size)
		stage_stat_add(s.stats, SHM_STAT_HOLE_PAGES, (size - pos) / page);

	struct proto_desc end = { .type = PROTO_DESC_END };
	struct shm_slot slot = proto_desc_pack(&end);
	for (uint32_t i = 0; i < s.n_workers; i++) {
		int rc = shm_ring_enqueue_all(&s.rings[i], &slot, 1);
		if (rc < 0)
			stage_die_ring(rc, "ring to worker");
	}
	stage_stat_set(s.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
