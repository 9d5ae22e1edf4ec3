/* pageferry-receiver: the destination side.  It restores snapshot files,
 * or receives a migration over TCP.
 *
 * receive mode: argv pageferry-receiver --mode=receive --listen=ADDR:PORT [--psk] --accept-timeout-ms=MS
 *                      --io-timeout-ms=MS [--in-place]
 *      fds (stage/stage_fds.h) 3 control segment (its worker count is the
 *      number of inflaters), 4 destination RAM file (read-write; empty, or
 *      with --in-place an existing file of the guest's size to overwrite),
 *      5 pre-shared key file (with --psk), 6 our end of the commit
 *      socket to the front end (receiver/rc_commit.h), 7 + 2i ring to inflater i (we
 *      produce), 8 + 2i ring from inflater i (buffers back), 7 + 2N + i
 *      inflater i's arena (read-write).
 *      Handshakes are read and checked before lock-down (they decide the
 *      destination's size); every packet is read after it.
 *
 * restore mode fds: 3 control segment (statistics), 4 destination RAM file
 *      (read-write, empty), 5 snapshot (buffered: header, bitmap, extent
 *      table), 6 the snapshot again, O_DIRECT (page data)
 * argv: pageferry-receiver --mode=restore --threads=N
 * check mode (`pageferry check`): the same without fd 4; verifies every
 *      extent's checksum against the snapshot's data, writes nothing.
 * argv: pageferry-receiver --mode=check --threads=N
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

#define USAGE                                                                                            \
	"pageferry-receiver --mode=restore|check --threads=N | --mode=receive --listen=ADDR:PORT [--psk] "  \
	"--accept-timeout-ms=MS --io-timeout-ms=MS [--in-place]"

static int receive_main(void)
{
	static struct rc_net r;
	const char *listen_addr = stage_arg_str("listen");
	int use_psk = stage_arg_flag("psk");
	int timeout_ms = (int)stage_arg_u64("accept-timeout-ms", 0, 86400000);
	r.io_timeout_ms = (int)stage_arg_u64("io-timeout-ms", 0, 86400000);
	int in_place = stage_arg_flag("in-place");
	stage_args_done();
	struct shm_segment seg;
	stage_attach_segment(&seg);
	r.n_inflaters = seg.geo.n_workers;
	static const int no_psk[] = { RECEIVER_FD_PSK };
	stage_close_inherited_fds(RECEIVER_FD_ARENA(r.n_inflaters - 1, r.n_inflaters), no_psk, use_psk ? 0 : 1);
	r.stats = shm_segment_stats(&seg, 0);
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
		int rc = net_psk_read(RECEIVER_FD_PSK, &psk, &why);
		if (rc < 0)
			stage_die_errno(rc, "%s", why);
	}
	for (uint32_t i = 0; i < r.n_inflaters; i++) {
		stage_ring(&seg, SHM_RING_SCAN_TO_WORKER, i, RECEIVER_FD_RING_OUT(i), &r.inf[i].out);
		stage_ring(&seg, SHM_RING_WRITER_TO_WORKER, i, RECEIVER_FD_RING_BACK(i), &r.inf[i].back);
		r.inf[i].arena = stage_map_arena(RECEIVER_FD_ARENA(i, r.n_inflaters),
						 wk_arena_size(WK_ARENA_DEST_BUFFER_SIZE), 1);
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++) {
			r.inf[i].free_buffers[r.inf[i].n_free++] = b;
			r.inf[i].is_free[b] = true;
		}
	}
	rc_net_accept_session(&r, listen_addr, &psk, timeout_ms ? timeout_ms : -1);
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
	int max_fd = RECEIVER_FD_ARENA(r.n_inflaters - 1, r.n_inflaters);
	max_fd = r.main_fd > max_fd ? r.main_fd : max_fd;
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
	stage_args(argc, argv, USAGE);
	static const char *const modes[] = { "restore", "check", "receive", NULL };
	int mode = stage_arg_choice("mode", modes);
	if (mode == 2)
		return receive_main();
	int threads = (int)stage_arg_u64("threads", 1, 64);
	stage_args_done();
	/* restore: up to the snapshot's O_DIRECT fd; check: no destination */
	static const int no_dest[] = { STAGE_FD_GUEST };
	stage_close_inherited_fds(RECEIVER_FD_DATA, no_dest, mode == 1 ? 1 : 0);
	return rc_restore_main(threads, mode == 1);
}
