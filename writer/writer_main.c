/* pageferry-writer: takes the workers' descriptors and writes page data
 * straight from the guest mapping into the snapshot file.
 *
 * fds: 3 control segment, 4 guest (read-only),
 *      5 snapshot file, buffered (header and bitmap)
 *      6 the same file opened O_DIRECT (page data only)
 *      7 + 2i  wake socket of ring worker i -> writer   (we consume)
 *      8 + 2i  wake socket of ring writer -> worker i   (buffers back)
 *
 * Descriptors are decoded from private copies and checked against the
 * geometry before any offset is computed from them.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "writer/wr_snapfile.h"

#define FD_META 5
#define FD_DATA 6
#define FD_RINGS 7
#define BURST 64u

struct writer {
	struct shm_segment seg;
	struct proto_geometry geo;
	const uint8_t *guest;
	struct shm_ring in[SHM_MAX_WORKERS], back[SHM_MAX_WORKERS];
	bool ended[SHM_MAX_WORKERS];
	uint32_t n_workers, n_ended;
	struct shm_stats *stats;
	struct wr_snapfile file;
};

/* Returns the number of descriptors handled from worker i's ring. */
static int drain_ring(struct writer *w, uint32_t i)
{
	struct shm_slot batch[BURST];
	int n = shm_ring_dequeue(&w->in[i], batch, BURST, SHM_RING_VARIABLE);
	if (n < 0)
		stage_die_ring(n, "ring from worker");
	for (int k = 0; k < n; k++) {
		struct proto_desc d;
		enum proto_err err = proto_desc_unpack(batch[k], &w->geo, 0, &d);
		if (err != PROTO_OK)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", i, proto_strerror(err));
		if (d.type == PROTO_DESC_END) {
			if (!w->ended[i]) {
				w->ended[i] = true;
				w->n_ended++;
			}
			continue;
		}
		if (d.type != PROTO_DESC_RUN || w->ended[i])
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: unexpected type %u", i, d.type);
		if (d.encoding == PROTO_ENC_ZERO) {
			stage_stat_add(w->stats, SHM_STAT_ZERO_PAGES, d.n_pages);
		} else if (d.encoding == PROTO_ENC_RAW) {
			stage_test_hook("writer");
			int rc = wr_snapfile_write_run(&w->file, w->guest + d.first_page * w->geo.page_size,
						       d.first_page, d.n_pages);
			if (rc < 0)
				stage_die_errno(rc, "writing pages %llu..%llu to the snapshot",
						(unsigned long long)d.first_page,
						(unsigned long long)(d.first_page + d.n_pages - 1));
			stage_stat_add(w->stats, SHM_STAT_BYTES, (uint64_t)d.n_pages * w->geo.page_size);
		} else {
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: encoding %u in a snapshot", i,
				  d.encoding);
		}
		stage_stat_add(w->stats, SHM_STAT_PAGES, d.n_pages);
		stage_stat_add(w->stats, SHM_STAT_RUNS, 1);
	}
	return n;
}

/* Nothing to do on any ring: sleep on all of their wake sockets at once. */
static void sleep_on_rings(struct writer *w)
{
	struct pollfd pfd[SHM_MAX_WORKERS];
	nfds_t n = 0;
	for (uint32_t i = 0; i < w->n_workers; i++) {
		if (w->ended[i])
			continue;
		int armed = shm_ring_arm_consumer(&w->in[i]);
		if (armed < 0)
			stage_die_ring(armed, "ring from worker");
		if (armed == 0)
			goto disarm; /* work arrived while arming */
		pfd[n++] = (struct pollfd){ .fd = w->in[i].wake_fd, .events = POLLIN };
	}
	if (n && poll(pfd, n, 1000) < 0 && errno != EINTR)
		stage_die_errno(-errno, "poll on worker rings");
disarm:
	for (uint32_t i = 0; i < w->n_workers; i++) {
		if (w->ended[i])
			continue;
		shm_ring_disarm_consumer(&w->in[i]);
		int rc = shm_ring_drain_wakes(&w->in[i]);
		/* A worker that hung up before its END died mid-run. */
		if (rc < 0 && shm_ring_ready_count(&w->in[i]) == 0)
			stage_die_ring(rc, "ring from worker");
	}
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	struct writer w = { 0 };
	stage_set_name("writer", -1);
	stage_attach_segment(&w.seg);
	w.n_workers = w.seg.geo.n_workers;
	w.geo = (struct proto_geometry){ .page_size = w.seg.geo.page_size,
					 .max_run_pages = w.seg.geo.max_run_pages,
					 .guest_pages = w.seg.geo.guest_pages };
	w.guest = stage_map_guest(&w.seg, 0);
	w.stats = shm_segment_stats(&w.seg, SHM_STATS_WRITER);
	for (uint32_t i = 0; i < w.n_workers; i++) {
		stage_ring(&w.seg, SHM_RING_WORKER_TO_WRITER, i, FD_RINGS + 2 * (int)i, &w.in[i]);
		stage_ring(&w.seg, SHM_RING_WRITER_TO_WORKER, i, FD_RINGS + 2 * (int)i + 1, &w.back[i]);
	}
	const char *what = "";
	int rc = wr_snapfile_begin(&w.file, FD_META, FD_DATA, w.geo.page_size,
				   w.geo.guest_pages * w.geo.page_size, &what);
	if (rc < 0)
		stage_die_errno(rc, "starting the snapshot: %s", what);
	/* The supervisor reads this to report (and tests assert) real direct I/O. */
	stage_stat_set(w.stats, SHM_STAT_FLAGS, w.file.direct ? SHM_FLAG_DIRECT_IO : 0);
	stage_lockdown(SB_ROLE_WRITER, FD_RINGS + 2 * (int)w.n_workers - 1, 1);
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	while (w.n_ended < w.n_workers) {
		int handled = 0;
		for (uint32_t i = 0; i < w.n_workers; i++)
			if (!w.ended[i])
				handled += drain_ring(&w, i);
		if (handled == 0)
			sleep_on_rings(&w);
	}
	rc = wr_snapfile_finish(&w.file, &what);
	if (rc < 0)
		stage_die_errno(rc, "finishing the snapshot: %s", what);
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
