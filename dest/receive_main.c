/* pageferry-receive: the destination of a migration.  It accepts the
 * sender's channels, checks every handshake, then places what arrives:
 * raw pages into the destination (dest/ds_place.h), zstd frames through its
 * inflater processes (dest/inflater_main.c).
 *
 * argv: pageferry-receive --listen=ADDR:PORT --tls=none|psk|x509 --accept-timeout-ms=MS
 *                         --io-timeout-ms=MS [--in-place [--zeroed]] [--device-state]
 * fds (stage/stage_fds.h): 3 control segment (its worker count is the
 *      number of inflaters; its geometry is a placeholder until the
 *      handshake, see its destination line), 4 destination RAM file
 *      (read-write; empty, or with --in-place an existing file of the
 *      guest's size to overwrite), 5 TLS credentials: the pre-shared key
 *      file (--tls=psk) or the X.509 directory (--tls=x509), 6 our end of
 *      the commit socket to the front end (dest/ds_commit.h: its notices
 *      about inflaters and its commit come in, our readiness goes out),
 *      7 + i wake socket of the ring to inflater i (we produce),
 *      7 + N + i inflater i's arena (read-write), 7 + 2N with --device-state
 *      (receive --qmp): an empty memfd the sender's device state is written to,
 *      checked, before lock-down (protocol/proto_state.h).
 *
 * TLS and our handshakes run before lock-down (they decide the
 * destination's size; dest/ds_session.c); every packet is read after it, by one thread per
 * data channel, started before lock-down and covered by the synchronised
 * filter.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "dest/ds_net.h"
#include "stage/stage.h"

#define USAGE                                                                                              \
	"pageferry-receive --listen=ADDR:PORT --tls=none|psk|x509 --accept-timeout-ms=MS --io-timeout-ms=MS " \
	"[--in-place [--zeroed]] [--device-state]"

int main(int argc, char **argv)
{
	stage_set_name("receive", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, USAGE);
	static struct ds_net r;
	const char *listen_addr = stage_arg_str("listen");
	static const char *const tls_kinds[] = NET_TLS_KIND_NAMES;
	enum net_tls_kind tls = (enum net_tls_kind)stage_arg_choice("tls", tls_kinds);
	int timeout_ms = (int)stage_arg_u64("accept-timeout-ms", 0, 86400000);
	r.io_timeout_ms = (int)stage_arg_u64("io-timeout-ms", 0, 86400000);
	int in_place = stage_arg_flag("in-place");
	bool zeroed = stage_arg_flag("zeroed");
	r.want_state = stage_arg_flag("device-state");
	stage_args_done();
	struct shm_segment seg;
	stage_attach_segment(&seg);
	uint32_t n_inflaters = seg.geo.n_workers;
	static const int no_creds[] = { RECEIVE_FD_CREDS };
	stage_close_inherited_fds(r.want_state ? RECEIVE_FD_STATE(n_inflaters) : RECEIVE_FD_ARENA(n_inflaters - 1, n_inflaters),
				  no_creds, tls != NET_TLS_NONE ? 0 : 1);
	r.stats = shm_segment_stats(&seg, SHM_STATS_DEST);
	static struct ds_inplace inplace;
	if (in_place) {
		/* Before anyone connects: learning which pages hold data is not
		 * on the clock (dest/ds_inplace.h). */
		const char *what = "";
		int rc = ds_inplace_open(&inplace, STAGE_FD_GUEST, zeroed, &what);
		if (rc < 0)
			stage_die_errno(rc, "%s", what);
		r.inplace = &inplace;
	}
	struct net_tls_creds *creds;
	char why[256] = "";
	int rc = net_tls_creds_load(&creds, NET_TLS_SERVER, tls, RECEIVE_FD_CREDS, why, sizeof(why));
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	ds_inflaters_attach(&r.inflaters, &seg, r.stats);
	ds_net_accept_session(&r, listen_addr, creds, timeout_ms);
	if (r.want_state)
		ds_net_receive_state(&r, RECEIVE_FD_STATE(n_inflaters));

	uint64_t size = r.geo.guest_pages * r.geo.page_size;
	stage_stat_set(r.stats, SHM_STAT_TOTAL_PAGES, r.geo.guest_pages);
	if (!in_place && ftruncate(STAGE_FD_GUEST, (off_t)size) < 0)
		stage_die_errno(-errno, "sizing the destination to %llu bytes", (unsigned long long)size);
	ds_place_open(&r.place, STAGE_FD_GUEST, size);
	/* The inflaters wait for the geometry to open the destination (sized
	 * just above) and lock down. */
	ds_inflaters_publish(&r.inflaters, &r.geo);
	ds_net_start_threads(&r);
	int max_fd = RECEIVE_FD_ARENA(n_inflaters - 1, n_inflaters);
	max_fd = r.main.fd > max_fd ? r.main.fd : max_fd;
	for (uint32_t c = 0; c < r.n_channels; c++)
		max_fd = r.ch[c].conn.fd > max_fd ? r.ch[c].conn.fd : max_fd;
	for (int k = 0; k < 2; k++)
		max_fd = r.done_pipe[k] > max_fd ? r.done_pipe[k] : max_fd;
	/* Threads exist before lock-down; the filter is synchronised to them and
	 * they read nothing before ds_net_receive lets them go. */
	stage_lockdown(SB_ROLE_RECEIVE, max_fd, 1);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	ds_net_receive(&r);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}

