/* pageferry-receiver: the destination side.  It restores snapshot files,
 * or receives a migration over TCP.
 *
 * receive mode: argv pageferry-receiver receive ADDR:PORT INFLATERS PSK(0|1) ACCEPT_TIMEOUT_MS IO_TIMEOUT_MS
 *                      IN_PLACE(0|1)
 *      fds 3 control segment, 4 destination RAM file (read-write; empty, or
 *      with IN_PLACE 1 an existing file of the guest's size to overwrite),
 *      5 pre-shared key file (with PSK 1), 6 our end of the commit
 *      socket to the front end (receiver/rc_commit.h), 7 + 2i ring to inflater i (we
 *      produce), 8 + 2i ring from inflater i (buffers back), 7 + 2N + i
 *      inflater i's arena (read-write).
 *      Handshakes are read and checked before lock-down (they decide the
 *      destination's size); every packet is read after it.
 *
 * restore mode fds: 3 control segment (statistics), 4 destination RAM file
 *      (read-write, empty), 5 snapshot (buffered: header, bitmap, extent
 *      table), 6 the snapshot again, O_DIRECT (page data)
 * argv: pageferry-receiver restore THREADS
 * check mode (`pageferry check`): the same without fd 4; verifies every
 *      extent's checksum against the snapshot's data, writes nothing.
 * argv: pageferry-receiver check THREADS
 *
 * The snapshot is untrusted input: header, bitmap and extent table are
 * decoded field by field and checked (protocol/proto_snapfile.c,
 * receiver/rc_extents.c) before any offset is used; after the pages are
 * read, every extent's CRC-32C is checked (receiver/rc_restore.c).
 * Reader threads are started before lock-down and wait on a barrier, so the
 * seccomp filter (synchronised to every thread) covers them before they read
 * a single page.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "receiver/rc_commit.h"
#include "receiver/rc_net.h"
#include "receiver/rc_restore.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include "workers/wk_arena.h"

#define FD_PSK 5
#define FD_RINGS 7

static int receive_main(char **argv)
{
	static struct rc_net r;
	struct shm_segment seg;
	stage_attach_segment(&seg);
	r.n_inflaters = seg.geo.n_workers;
	r.stats = shm_segment_stats(&seg, 0);
	int use_psk = (int)stage_parse_u64("psk flag", argv[4], 0, 1);
	int timeout_ms = (int)stage_parse_u64("accept timeout", argv[5], 0, 86400000);
	r.io_timeout_ms = (int)stage_parse_u64("io timeout", argv[6], 0, 86400000);
	int in_place = (int)stage_parse_u64("in-place flag", argv[7], 0, 1);
	static struct rc_inplace inplace;
	if (in_place) {
		/* Before anyone connects: mapping its pages is not on the clock. */
		const char *what = "";
		int rc = rc_inplace_open(&inplace, STAGE_FD_GUEST, &what);
		if (rc < 0)
			stage_die_errno(rc, "%s", what);
		r.dest = stage_map_file(STAGE_FD_GUEST, "destination", inplace.size, 1);
		rc_inplace_populate(&inplace, r.dest);
		r.inplace = &inplace;
	}
	static struct net_psk psk;
	if (use_psk) {
		const char *why = "";
		int rc = net_psk_read(FD_PSK, &psk, &why);
		if (rc < 0)
			stage_die_errno(rc, "%s", why);
	}
	for (uint32_t i = 0; i < r.n_inflaters; i++) {
		stage_ring(&seg, SHM_RING_SCAN_TO_WORKER, i, FD_RINGS + 2 * (int)i, &r.inf[i].out);
		stage_ring(&seg, SHM_RING_WRITER_TO_WORKER, i, FD_RINGS + 2 * (int)i + 1, &r.inf[i].back);
		r.inf[i].arena = stage_map_arena(FD_RINGS + 2 * (int)r.n_inflaters + (int)i,
						 wk_arena_size(RC_ARENA_BUFFER_SIZE), 1);
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++) {
			r.inf[i].free_buffers[r.inf[i].n_free++] = b;
			r.inf[i].is_free[b] = true;
		}
	}
	rc_net_accept_session(&r, argv[2], &psk, timeout_ms ? timeout_ms : -1);
	memset(&psk, 0, sizeof(psk));

	uint64_t size = r.geo.guest_pages * r.geo.page_size;
	stage_stat_set(r.stats, SHM_STAT_TOTAL_PAGES, r.geo.guest_pages);
	if (!in_place) {
		if (ftruncate(STAGE_FD_GUEST, (off_t)size) < 0)
			stage_die_errno(-errno, "sizing the destination to %llu bytes", (unsigned long long)size);
		r.dest = stage_map_file(STAGE_FD_GUEST, "destination", size, 1);
	}
	/* The inflaters learn the geometry from the first slot of their ring. */
	struct shm_slot start = { .w0 = r.geo.guest_pages,
				  .w1 = r.geo.page_size | (uint64_t)r.geo.max_run_pages << 32 };
	for (uint32_t i = 0; i < r.n_inflaters; i++) {
		int rc = shm_ring_enqueue_all(&r.inf[i].out, &start, 1);
		if (rc < 0)
			stage_die_ring(rc, "ring to inflater");
	}
	rc_net_start_threads(&r);
	int max_fd = r.main_fd > RC_FD_COMMIT ? r.main_fd : RC_FD_COMMIT;
	for (uint32_t c = 0; c < r.n_channels; c++)
		max_fd = r.ch[c].fd > max_fd ? r.ch[c].fd : max_fd;
	for (int k = 0; k < 2; k++)
		max_fd = r.done_pipe[k] > max_fd ? r.done_pipe[k] : max_fd;
	/* Threads exist before lock-down; the filter is synchronised to them and
	 * they read nothing before rc_net_receive lets them go. */
	stage_lockdown(SB_ROLE_RECEIVER, max_fd, 1);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	rc_net_receive(&r);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}

int main(int argc, char **argv)
{
	stage_set_name("receiver", -1);
	stage_tie_to_supervisor();
	if (argc == 8 && strcmp(argv[1], "receive") == 0)
		return receive_main(argv);
	if (argc != 3 || (strcmp(argv[1], "restore") != 0 && strcmp(argv[1], "check") != 0))
		stage_die(STAGE_EXIT_USAGE, "usage: pageferry-receiver restore THREADS | check THREADS | "
					    "receive ADDR:PORT INFLATERS PSK ACCEPT_TIMEOUT_MS IO_TIMEOUT_MS IN_PLACE");
	int threads = (int)stage_parse_u64("thread count", argv[2], 1, 64);
	return rc_restore_main(threads, strcmp(argv[1], "check") == 0);
}
