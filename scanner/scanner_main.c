/* pageferry-scanner: walks the guest file and posts page runs to the workers.
 *
 * fds (stage/stage_fds.h): 3 control segment, 4 guest (read-only),
 *      5 + i  wake socket of ring scanner -> worker i (i < n_workers)
 *      5 + n_workers  the dirty log, read-write (--live)
 *                     or, with --held, a pipe from the front end
 * argv: pageferry-scanner [--held]
 *       pageferry-scanner --live --downtime-limit-ms=MS --max-bandwidth=BYTES_PER_S [--auto-converge]
 *                         --max-rounds=N --pause-timeout-ms=MS
 *
 * --held (snapshot and migrate --qmp): started before the guest is
 * stopped, ready and locked down, the scanner reads nothing of the guest
 * until the front end, having stopped it, writes 'G' on the pipe.
 *
 * In live mode the whole RAM is round 1; later rounds come from the dirty
 * log (scanner/sc_precopy.c).  Each round ends with a FENCE on every worker
 * ring.
 *
 * Holes in the guest file (never written) are found with SEEK_DATA/SEEK_HOLE
 * and skipped without being read: reading them would make the kernel
 * allocate memory for them.  The rest goes out in runs of at most
 * max_run_pages, round-robin over the workers, skipping a worker whose ring
 * is full so one slow worker does not stall the others.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_dirtylog.h"
#include "scanner/sc_precopy.h"
#include "scanner/sc_scanner.h"
#include "stage/stage_extents.h"

uint64_t sc_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void post_slot(struct scanner *s, struct shm_slot slot)
{
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

/* --max-bandwidth: do not post faster than the limit allows. */
static void pace(struct scanner *s, uint64_t bytes)
{
	if (!s->max_bandwidth)
		return;
	s->posted_bytes += bytes;
	uint64_t due_us = s->posted_bytes * 1000000u / s->max_bandwidth;
	uint64_t elapsed = sc_now_us() - s->pacing_start_us;
	if (due_us > elapsed) {
		uint64_t wait = due_us - elapsed;
		struct timespec ts = { (time_t)(wait / 1000000u), (long)(wait % 1000000u) * 1000 };
		nanosleep(&ts, NULL);
	}
}

void sc_post_fence(struct scanner *s)
{
	struct proto_desc d = { .type = PROTO_DESC_FENCE, .first_page = s->round };
	struct shm_slot slot = proto_desc_pack(&d);
	for (uint32_t i = 0; i < s->n_workers; i++) {
		int rc = shm_ring_enqueue_all(&s->rings[i], &slot, 1);
		if (rc < 0)
			stage_die_ring(rc, "ring to worker");
	}
}

void sc_post_extent(struct scanner *s, uint64_t first, uint64_t end_page)
{
	uint32_t run = s->seg.geo.max_run_pages;
	while (first < end_page) {
		uint64_t n = end_page - first < run ? end_page - first : run;
		struct proto_desc d = { .type = PROTO_DESC_RUN, .first_page = first, .n_pages = (uint32_t)n };
		stage_test_hook("scanner");
		post_slot(s, proto_desc_pack(&d));
		pace(s, n * s->seg.geo.page_size);
		stage_stat_add(s->stats, SHM_STAT_PAGES, n);
		stage_stat_add(s->stats, SHM_STAT_RUNS, 1);
		first += n;
	}
}

static uint8_t *map_dirty_log(const struct scanner *s, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		stage_die_errno(-errno, "dirty log on fd %d", fd);
	uint8_t *log = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (log == MAP_FAILED)
		stage_die_errno(-errno, "mmap dirty log");
	enum proto_err err = proto_dirtylog_check(log, (uint64_t)st.st_size, s->seg.geo.page_size,
						  s->seg.geo.guest_pages);
	if (err != PROTO_OK)
		stage_die(STAGE_EXIT_FAILED, "dirty log: %s", proto_strerror(err));
	return log;
}

#define USAGE                                                                                   \
	"pageferry-scanner [--held | --live --downtime-limit-ms=MS --max-bandwidth=BYTES_PER_S " \
	"[--auto-converge] --max-rounds=N --pause-timeout-ms=MS]"

/* --held: 'G' once the front end has stopped the guest; anything else (it
 * went away: end of file) ends us before we read a page. */
static void wait_for_go(int fd)
{
	if (stage_read_byte(fd) != 'G')
		stage_die(STAGE_EXIT_PEER, "the front end went away before it stopped the guest");
	if (close(fd) < 0)
		stage_die_errno(-errno, "closing the pipe from the front end");
}

int main(int argc, char **argv)
{
	struct scanner s = { 0 };
	stage_set_name("scanner", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, USAGE);
	struct sc_precopy_params params = { 0 };
	int live = stage_arg_flag("live");
	if (live) {
		params.downtime_limit_us = stage_arg_u64("downtime-limit-ms", 1, 3600000) * 1000;
		params.max_bandwidth = stage_arg_u64("max-bandwidth", 0, UINT64_MAX / 1000000);
		params.auto_converge = stage_arg_flag("auto-converge");
		params.max_rounds = (uint32_t)stage_arg_u64("max-rounds", 2, SHM_MAX_ROUNDS);
		params.pause_timeout_us = stage_arg_u64("pause-timeout-ms", 1, 600000) * 1000;
	}
	int held = stage_arg_flag("held");
	stage_args_done();
	if (held && live)
		stage_usage_error("--held does not go with --live");
	stage_attach_segment(&s.seg);
	s.n_workers = s.seg.geo.n_workers;
	stage_close_inherited_fds(live ? SCANNER_FD_DIRTY_LOG(s.n_workers)
				  : held ? SCANNER_FD_GO(s.n_workers)
					 : SCANNER_FD_RING(s.n_workers - 1),
				  NULL, 0);
	s.stats = shm_segment_stats(&s.seg, SHM_STATS_SCANNER);
	s.writer_stats = shm_segment_stats(&s.seg, SHM_STATS_WRITER);
	s.round = 1;
	for (uint32_t i = 0; i < s.n_workers; i++)
		stage_ring(&s.seg, SHM_RING_SCAN_TO_WORKER, i, SCANNER_FD_RING(i), &s.rings[i]);
	uint8_t *dirty_log = NULL;
	int max_fd = SCANNER_FD_RING(s.n_workers - 1);
	if (live) {
		dirty_log = map_dirty_log(&s, SCANNER_FD_DIRTY_LOG(s.n_workers));
		params.dirty_buf = calloc(proto_dirtylog_words(s.seg.geo.guest_pages), sizeof(uint64_t));
		if (!params.dirty_buf)
			stage_die_errno(-ENOMEM, "allocating the dirty bitmap");
		max_fd = SCANNER_FD_DIRTY_LOG(s.n_workers);
		s.max_bandwidth = params.max_bandwidth;
	}
	if (held)
		max_fd = SCANNER_FD_GO(s.n_workers);
	stage_lockdown(SB_ROLE_SCANNER, max_fd, 0);
	stage_stat_set(s.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	if (held)
		wait_for_go(SCANNER_FD_GO(s.n_workers));
	s.pacing_start_us = sc_now_us();

	const uint64_t page = s.seg.geo.page_size;
	const uint64_t size = s.seg.geo.guest_pages * page;
	uint64_t pos = 0, data, hole;
	int found;
	while (pos < size && (found = stage_next_data_extent(STAGE_FD_GUEST, pos, size, &data, &hole)) != 0) {
		if (found < 0)
			stage_die_errno(found, "finding the guest's data extents (SEEK_DATA/SEEK_HOLE) at byte %llu",
					(unsigned long long)pos);
		/* Extents are byte ranges; a page is data if any byte of it is. */
		uint64_t first = data / page, end = (hole + page - 1) / page;
		if (first * page > pos)
			stage_stat_add(s.stats, SHM_STAT_HOLE_PAGES, first - pos / page);
		sc_post_extent(&s, first, end);
		pos = end * page;
	}
	if (pos < size)
		stage_stat_add(s.stats, SHM_STAT_HOLE_PAGES, (size - pos) / page);
	if (live)
		sc_precopy_run(&s, dirty_log, &params);

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
