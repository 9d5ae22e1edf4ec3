/* pageferry-writer: takes the workers' descriptors and writes page data
 * straight from the guest mapping into the snapshot file, or sends it to a
 * pageferry receiver.
 *
 * argv: pageferry-writer --mode=snapshot
 *       pageferry-writer --mode=migrate --to=HOST:PORT --channels=N --zerocopy=off|auto|on|sendfile [--psk]
 *                        [--zstd] --connect-timeout-ms=MS [--rounds] --io-timeout-ms=MS
 *       (--psk: a pre-shared key on fd 5; --zstd: the workers compress into
 *       their arenas; --rounds: a live migration's pre-copy rounds)
 * fds (stage/stage_fds.h): 3 control segment, 4 guest (read-only),
 *      snapshot: 5 snapshot file, buffered (header and bitmap)
 *                6 the same file opened O_DIRECT (page data only)
 *      migrate:  5 pre-shared key file (with --psk)
 *                6 socket to the front end, for the commit decision
 *      7 + 2i  wake socket of ring worker i -> writer   (we consume)
 *      8 + 2i  wake socket of ring writer -> worker i   (buffers back)
 *      7 + 2W + i  worker i's arena, read-only (migrate with --zstd)
 *
 * Descriptors are decoded from private copies and checked against the
 * geometry before any offset is computed from them.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include <sys/stat.h>
#include "workers/wk_arena.h"
#include "writer/wr_net.h"
#include "writer/wr_recheck.h"
#include "writer/wr_snapfile.h"
#include "writer/wr_window.h"

#define BURST 64u

#define USAGE                                                                                              \
	"pageferry-writer --mode=snapshot | --mode=migrate --to=HOST:PORT --channels=N "                    \
	"--zerocopy=off|auto|on|sendfile [--psk] [--zstd] --connect-timeout-ms=MS [--rounds] --io-timeout-ms=MS"

/* The migrate mode's arguments. */
struct migrate_args {
	const char *to;
	uint32_t channels;
	enum wr_zerocopy zerocopy;
	bool psk, zstd;
	int connect_timeout_ms, io_timeout_ms;
};

struct writer {
	struct shm_segment seg;
	struct proto_geometry geo;
	const uint8_t *guest;
	struct shm_ring in[SHM_MAX_WORKERS], back[SHM_MAX_WORKERS];
	bool ended[SHM_MAX_WORKERS];
	uint32_t n_workers, n_ended;
	struct shm_stats *stats;
	bool migrate;
	bool rounds;	/* live migration: the dirty log covers a changing guest */
	struct wr_snapfile file;
	struct wr_net net;
	/* Pre-copy rounds: descriptors after a worker's fence wait here. */
	uint32_t round;
	bool fenced[SHM_MAX_WORKERS];
	uint32_t n_fenced;
	struct shm_slot held[SHM_MAX_WORKERS][BURST];
	uint32_t n_held[SHM_MAX_WORKERS], held_from[SHM_MAX_WORKERS];
	const uint8_t *arena[SHM_MAX_WORKERS];
	uint64_t buffer_size;
	/* Raw and zero sub-runs not sent yet, one window per worker: a run's
	 * sub-runs come in order from one worker, possibly over several
	 * drains of its ring with other workers' in between. */
	struct wr_window window[SHM_MAX_WORKERS];
};

static void return_buffer(void *ctx, uint32_t worker, uint32_t buffer)
{
	struct writer *w = ctx;
	struct proto_desc d = { .type = PROTO_DESC_BUFFER, .buffer = (uint16_t)buffer };
	struct shm_slot s = proto_desc_pack(&d);
	/* The ring holds more slots than the worker has buffers: never full. */
	int rc = shm_ring_enqueue_all(&w->back[worker], &s, 1);
	if (rc < 0)
		stage_die_ring(rc, "ring back to worker");
}

static noreturn void die_refused(uint32_t status)
{
	if (status == PROTO_RESULT_LOCAL_FAILURE)
		stage_die(STAGE_EXIT_FAILED, "the receiver failed on its side (its own output says why)");
	stage_die(STAGE_EXIT_FAILED, "the receiver refused the transfer: %s", proto_strerror((enum proto_err)status));
}

/* A failed send or wait for the receiver: the guest file shrank under a
 * send from its mapping (EFAULT), the link died (--io-timeout), the
 * receiver refused a packet (it says why before it hangs up), or what the
 * kernel said. */
static noreturn void net_failed(struct writer *w, int rc, const char *what)
{
	stage_die_if_fault(STAGE_MAP_GUEST, rc);
	if (wr_net_link_dead(&w->net, rc))
		stage_die(STAGE_EXIT_FAILED, "the link to %s is dead: no progress for %d s (--io-timeout)", w->net.peer,
			  w->net.io_timeout_ms / 1000);
	/* Paused: the receiver may have refused pages the guest changed. */
	if (!w->rounds)
		wr_recheck_after_failure(&w->seg, w->in, w->back, 10000);
	/* A receiver that refused a packet says why before it hangs up. */
	uint32_t status;
	if ((rc == -EPIPE || rc == -ECONNRESET) && wr_net_why_refused(&w->net, 1000, &status) == 0 &&
	    status != PROTO_OK)
		die_refused(status);
	stage_die_errno(rc, "%s", what);
}

static noreturn void snapshot_failed(int rc, const char *what)
{
	stage_die_if_fault(STAGE_MAP_GUEST, rc); /* O_DIRECT from a guest page that is gone */
	stage_die_errno(rc, "%s", what);
}

/* A guest that shrank after its last page was read faults nowhere: check
 * its size before reporting the copy complete. */
static void check_guest_size(const struct writer *w)
{
	struct stat st;
	if (fstat(STAGE_FD_GUEST, &st) < 0)
		stage_die_errno(-errno, "fstat of the guest file");
	if ((uint64_t)st.st_size < w->geo.guest_pages * w->geo.page_size)
		stage_die(STAGE_EXIT_FAILED, "%s", stage_fault_reason(STAGE_MAP_GUEST));
}

static void sent(struct writer *w, int rc, const struct proto_packet *p)
{
	if (rc < 0)
		net_failed(w, rc, "sending to the receiver");
	stage_stat_add(w->stats, SHM_STAT_PACKETS, 1);
	if (p->payload_len)
		stage_stat_add(w->stats, SHM_STAT_BYTES, p->payload_len);
}

/* The raw and zero sub-runs gathered so far, as one packet. */
static void send_window(struct writer *w, struct wr_window *win)
{
	if (win->n_pages == 0)
		return;
	struct proto_packet p = { .round = w->round };
	uint32_t prefix_len;
	wr_window_packet(win, &p, &prefix_len);
	sent(w, wr_net_send_iov(&w->net, &p, win->bitmap, prefix_len, win->extents, win->n_extents), &p);
	wr_window_clear(win);
}

static void send_windows(struct writer *w)
{
	for (uint32_t i = 0; i < w->n_workers; i++)
		send_window(w, &w->window[i]);
}

static void send_run(struct writer *w, uint32_t i, const struct proto_desc *d)
{
	if (d->encoding != PROTO_ENC_ZSTD) {
		struct wr_window *win = &w->window[i];
		bool data = d->encoding == PROTO_ENC_RAW;
		if (!wr_window_fits(win, d->first_page, d->n_pages, data))
			send_window(w, win);
		/* A RAW sub-run's payload_len is its pages' CRC (proto_desc.h). */
		wr_window_add(win, d->first_page, d->n_pages, data ? w->guest + d->first_page * w->geo.page_size : NULL,
			      data ? d->payload_len : 0);
		if (wr_window_full(win))
			send_window(w, win);
		return;
	}
	if (!w->arena[i])
		stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: zstd without compression", i);
	const uint8_t *frame = w->arena[i] + d->buffer * w->buffer_size;
	uint32_t crc;
	if (!proto_desc_frame_crc(frame, w->buffer_size, d->payload_len, &crc))
		stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", i, proto_strerror(PROTO_E_PAYLOAD_LEN));
	struct proto_packet p = { .type = PROTO_PKT_DATA, .encoding = d->encoding, .round = w->round,
				  .n_pages = d->n_pages, .first_page = d->first_page,
				  .payload_len = d->payload_len, .payload_crc = crc };
	sent(w, wr_net_send(&w->net, &p, frame, (int32_t)i, d->buffer), &p);
}

/* Returns the number of descriptors handled from worker i's ring. */
static int drain_ring(struct writer *w, uint32_t i)
{
	struct shm_slot *batch = w->held[i];
	int n = (int)w->n_held[i], k0 = (int)w->held_from[i];
	if (k0 == n) {
		n = shm_ring_dequeue(&w->in[i], batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from worker");
		k0 = 0;
	}
	w->n_held[i] = w->held_from[i] = 0;
	for (int k = k0; k < n; k++) {
		struct proto_desc d;
		enum proto_err err = proto_desc_unpack(batch[k], &w->geo, w->arena[i] ? WK_ARENA_BUFFERS : 0, &d);
		if (err != PROTO_OK)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", i, proto_strerror(err));
		if (d.type == PROTO_DESC_FENCE) {
			/* This worker's round is done; what follows belongs to the
			 * next one and waits until every worker got here. */
			if (d.first_page != w->round)
				stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: fence for round %llu in round %u",
					  i, (unsigned long long)d.first_page, w->round);
			w->fenced[i] = true;
			w->n_fenced++;
			w->n_held[i] = (uint32_t)n;
			w->held_from[i] = (uint32_t)(k + 1);
			return k + 1 - k0;
		}
		if (d.type == PROTO_DESC_END) {
			if (!w->ended[i]) {
				w->ended[i] = true;
				w->n_ended++;
			}
			continue;
		}
		if (d.type != PROTO_DESC_RUN || w->ended[i])
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: unexpected type %u", i, d.type);
		if (w->migrate) {
			send_run(w, i, &d);
		} else if (d.encoding == PROTO_ENC_ZERO) {
			stage_stat_add(w->stats, SHM_STAT_ZERO_PAGES, d.n_pages);
		} else if (d.encoding == PROTO_ENC_RAW) {
			stage_test_hook("writer");
			/* A RAW sub-run's payload_len is its pages' CRC: one extent record. */
			int rc = wr_snapfile_add_run(&w->file, w->guest + d.first_page * w->geo.page_size,
						     d.first_page, d.n_pages, d.payload_len);
			if (rc == -E2BIG)
				stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: more extents than guest pages", i);
			if (rc < 0)
				snapshot_failed(rc, "writing page data to the snapshot");
			stage_stat_add(w->stats, SHM_STAT_BYTES, (uint64_t)d.n_pages * w->geo.page_size);
		} else {
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: encoding %u in a snapshot", i,
				  d.encoding);
		}
		stage_stat_add(w->stats, SHM_STAT_PAGES, d.n_pages);
		stage_stat_add(w->stats, SHM_STAT_RUNS, 1);
	}
	return n - k0;
}

/* Every worker reached the fence: the round is over on every channel. */
static void end_round(struct writer *w)
{
	send_windows(w);
	int rc = wr_net_sync(&w->net, w->round);
	if (rc < 0)
		net_failed(w, rc, "sending to the receiver");
	/* Release, paired with the acquire in the scanner's wait_round_sent
	 * (scanner/sc_precopy.c): whoever sees round r sent also sees this
	 * round's statistics (bytes sent), which the scanner measures. */
	atomic_store_explicit(&w->stats->v[SHM_STAT_ROUND], w->round, memory_order_release);
	w->round++;
	w->n_fenced = 0;
	for (uint32_t i = 0; i < w->n_workers; i++)
		w->fenced[i] = false;
}

/* Nothing to do on any ring: sleep on all of their wake sockets at once. */
static void sleep_on_rings(struct writer *w)
{
	/* Writes merged so far go out before we sleep, not after; buffers
	 * whose sends completed go back before the workers wait for them. */
	if (w->migrate)
		send_windows(w);
	int flushed = w->migrate ? wr_net_flush(&w->net) : wr_snapfile_flush(&w->file);
	if (flushed == 0 && w->migrate)
		flushed = wr_net_reap(&w->net);
	if (flushed < 0 && w->migrate)
		net_failed(w, flushed, "sending to the receiver");
	if (flushed < 0)
		snapshot_failed(flushed, "writing page data to the snapshot");
	struct pollfd pfd[SHM_MAX_WORKERS + PROTO_MAX_CHANNELS];
	nfds_t n = 0;
	for (uint32_t i = 0; i < w->n_workers; i++) {
		if (w->ended[i] || w->fenced[i])
			continue;
		int armed = shm_ring_arm_consumer(&w->in[i]);
		if (armed < 0)
			stage_die_ring(armed, "ring from worker");
		if (armed == 0)
			goto disarm; /* work arrived while arming */
		pfd[n++] = (struct pollfd){ .fd = w->in[i].wake_fd, .events = POLLIN };
	}
	/* Workers may be waiting for buffers that only a completion frees. */
	if (w->migrate)
		n += wr_net_pollfds(&w->net, pfd + n, PROTO_MAX_CHANNELS);
	if (n && poll(pfd, n, 1000) < 0 && errno != EINTR)
		stage_die_errno(-errno, "poll on worker rings");
disarm:
	for (uint32_t i = 0; i < w->n_workers; i++) {
		if (w->ended[i] || w->fenced[i])
			continue;
		shm_ring_disarm_consumer(&w->in[i]);
		int rc = shm_ring_drain_wakes(&w->in[i]);
		/* A worker that hung up before its END died mid-run. */
		if (rc < 0 && shm_ring_ready_count(&w->in[i]) == 0)
			stage_die_ring(rc, "ring from worker");
	}
}

/* Connect and handshake every channel, before lock-down. */
static void open_migration(struct writer *w, const struct migrate_args *a, int *max_fd)
{
	static struct net_psk psk;
	if (a->psk) {
		const char *why = "";
		int rc = net_psk_read(WRITER_FD_PSK, &psk, &why);
		if (rc < 0)
			stage_die_errno(rc, "%s", why);
	}
	if (a->zstd) {
		w->buffer_size = (uint64_t)w->geo.max_run_pages * w->geo.page_size;
		for (uint32_t i = 0; i < w->n_workers; i++)
			w->arena[i] = stage_map_arena(WRITER_FD_ARENA(i, w->n_workers), wk_arena_size(w->buffer_size),
						      0);
		*max_fd = WRITER_FD_ARENA(w->n_workers - 1, w->n_workers);
	}
	struct proto_handshake hs = { .geo = w->geo, .n_channels = (uint16_t)a->channels,
				      .features = (a->zstd ? PROTO_F_ZSTD : 0) | (a->psk ? PROTO_F_PSK : 0) |
						  (w->rounds ? PROTO_F_ROUNDS : 0) };
	if (getrandom(hs.session_id, sizeof(hs.session_id), 0) != sizeof(hs.session_id))
		stage_die_errno(-errno, "getrandom for the session id");
	/* sendfile has no MSG_NOSIGNAL: a receiver that went away must be
	 * EPIPE, reported, not a silent death by SIGPIPE. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		stage_die_errno(-errno, "ignoring SIGPIPE");
	char what[256] = "";
	struct wr_guest guest = { .fd = STAGE_FD_GUEST, .base = w->guest,
				  .bytes = w->geo.guest_pages * w->geo.page_size };
	int rc = wr_net_open(&w->net, a->to, &hs, &psk, a->zerocopy, &guest, a->connect_timeout_ms, a->io_timeout_ms,
			     what, sizeof(what));
	if (rc < 0)
		stage_die_errno(rc, "%s", what);
	if (rc > 0)
		stage_die(STAGE_EXIT_FAILED, "%s", what);
	for (uint32_t i = 0; i < w->n_workers; i++)
		wr_window_init(&w->window[i], w->geo.max_run_pages, w->geo.page_size);
	w->net.buffer_done = return_buffer;
	w->net.ctx = w;
	memset(&psk, 0, sizeof(psk));
	stage_stat_set(w->stats, SHM_STAT_FLAGS,
		       (w->net.zerocopy ? SHM_FLAG_ZEROCOPY : 0) | (w->net.sendfile ? SHM_FLAG_SENDFILE : 0));
	/* sockets: the main channel, then the data channels, after our fds */
	*max_fd = w->net.main_fd > *max_fd ? w->net.main_fd : *max_fd;
	for (uint32_t i = 0; i < a->channels; i++)
		*max_fd = w->net.ch[i].fd > *max_fd ? w->net.ch[i].fd : *max_fd;
}

static void check_answer(int rc, uint32_t status, struct writer *w)
{
	if (rc < 0)
		net_failed(w, rc, "finishing the migration");
	if (rc > 0)
		stage_die(STAGE_EXIT_FAILED, "the receiver's answer: %s", proto_strerror((enum proto_err)rc));
	if (status != PROTO_OK)
		die_refused(status);
}

/* The front end decides whether the prepared copy is committed: it knows
 * whether the source's VMM still holds the guest paused for us (the lease)
 * and whether the user cancelled.  One byte each way on WRITER_FD_COMMIT. */
static bool front_end_says_commit(void)
{
	char c = 'P';
	ssize_t n;
	do
		n = write(WRITER_FD_COMMIT, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		stage_die_errno(n < 0 ? -errno : -EPIPE, "asking the front end to commit");
	do
		n = read(WRITER_FD_COMMIT, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		stage_die(STAGE_EXIT_PEER, "the front end went away before it decided the commit");
	return c == 'C';
}

static void finish_migration(struct writer *w)
{
	send_windows(w);
	uint32_t status = PROTO_OK;
	int rc = wr_net_finish(&w->net, &status);
	check_answer(rc, status, w);
	/* Prepared: every check passed there and the copy is durable, but it is
	 * committed only when we say so (doc/architecture.md, "The handoff").
	 * Every page is in the receiver's hands now, so this is when to check
	 * that the guest did not change meanwhile (without a dirty log). */
	uint64_t first = 0, last = 0;
	bool changed = wr_recheck_by_workers(&w->seg, w->in, w->back, w->rounds, &first, &last) > 0;
	bool commit = !changed && front_end_says_commit();
	rc = wr_net_commit(&w->net, commit, &status);
	if (changed)
		wr_recheck_changed(first, last);
	if (!commit)
		stage_die(STAGE_EXIT_FAILED, "the commit was called off; the receiver keeps nothing");
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	stage_stat_set(w->stats, SHM_STAT_EVENT_US, (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u);
	stage_stat_set(w->stats, SHM_STAT_ZC_SENDS, wr_net_zc_sends(&w->net));
	stage_stat_set(w->stats, SHM_STAT_ZC_COPIED, wr_net_zc_copied(&w->net));
	stage_stat_set(w->stats, SHM_STAT_SENDFILE_BYTES, wr_net_sendfile_bytes(&w->net));
	check_answer(rc, status, w);
}

int main(int argc, char **argv)
{
	struct writer w = { 0 };
	stage_set_name("writer", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, USAGE);
	static const char *const modes[] = { "snapshot", "migrate", NULL };
	static const char *const zc_modes[] = { "off", "auto", "on", "sendfile", NULL };
	static const enum wr_zerocopy zc_values[] = { WR_ZC_OFF, WR_ZC_AUTO, WR_ZC_ON, WR_ZC_SENDFILE };
	struct migrate_args ma = { 0 };
	w.migrate = stage_arg_choice("mode", modes) == 1;
	if (w.migrate) {
		ma.to = stage_arg_str("to");
		ma.channels = (uint32_t)stage_arg_u64("channels", 1, PROTO_MAX_CHANNELS);
		ma.zerocopy = zc_values[stage_arg_choice("zerocopy", zc_modes)];
		ma.psk = stage_arg_flag("psk");
		ma.zstd = stage_arg_flag("zstd");
		ma.connect_timeout_ms = (int)stage_arg_u64("connect-timeout-ms", 0, 3600000);
		w.rounds = stage_arg_flag("rounds");
		ma.io_timeout_ms = (int)stage_arg_u64("io-timeout-ms", 0, 86400000);
	}
	stage_args_done();
	w.round = 1;
	stage_attach_segment(&w.seg);
	w.n_workers = w.seg.geo.n_workers;
	/* Our fds: the rings' and, migrating with zstd, the arenas after them. */
	static const int no_psk[] = { WRITER_FD_PSK };
	stage_close_inherited_fds(w.migrate && ma.zstd ? WRITER_FD_ARENA(w.n_workers - 1, w.n_workers)
						       : WRITER_FD_RING_BACK(w.n_workers - 1),
				  no_psk, w.migrate && !ma.psk ? 1 : 0);
	w.geo = (struct proto_geometry){ .page_size = w.seg.geo.page_size,
					 .max_run_pages = w.seg.geo.max_run_pages,
					 .guest_pages = w.seg.geo.guest_pages };
	w.guest = stage_map_guest(&w.seg, 0);
	w.stats = shm_segment_stats(&w.seg, SHM_STATS_WRITER);
	for (uint32_t i = 0; i < w.n_workers; i++) {
		stage_ring(&w.seg, SHM_RING_WORKER_TO_WRITER, i, WRITER_FD_RING_IN(i), &w.in[i]);
		stage_ring(&w.seg, SHM_RING_WRITER_TO_WORKER, i, WRITER_FD_RING_BACK(i), &w.back[i]);
	}
	int rc, max_fd = WRITER_FD_RING_BACK(w.n_workers - 1);
	if (w.migrate) {
		open_migration(&w, &ma, &max_fd);
	} else {
		const char *what = "";
		rc = wr_snapfile_begin(&w.file, WRITER_FD_META, WRITER_FD_DATA, w.geo.page_size,
					   w.geo.guest_pages * w.geo.page_size, &what);
		if (rc < 0)
			stage_die_errno(rc, "starting the snapshot: %s", what);
		/* The supervisor reads this to report (and tests assert) real direct I/O. */
		stage_stat_set(w.stats, SHM_STAT_FLAGS, w.file.direct ? SHM_FLAG_DIRECT_IO : 0);
	}
	stage_lockdown(SB_ROLE_WRITER, max_fd, !w.migrate);
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	while (w.n_ended < w.n_workers) {
		if (w.migrate && atomic_load_explicit(&w.seg.hdr->cancel, memory_order_acquire)) {
			wr_net_cancel(&w.net);
			stage_die(STAGE_EXIT_FAILED, "cancelled");
		}
		int handled = 0;
		for (uint32_t i = 0; i < w.n_workers; i++)
			if (!w.ended[i] && !w.fenced[i])
				handled += drain_ring(&w, i);
		if (w.n_fenced && w.n_fenced + w.n_ended == w.n_workers) {
			end_round(&w);
			continue;
		}
		if (handled == 0)
			sleep_on_rings(&w);
		else if (w.migrate && ((rc = wr_net_flush(&w.net)) < 0 || (rc = wr_net_reap(&w.net)) < 0))
			net_failed(&w, rc, "sending to the receiver");
	}
	check_guest_size(&w);
	if (w.migrate) {
		finish_migration(&w);
	} else {
		/* Every page written, then the check that the guest did not
		 * change meanwhile, then the header that says COMPLETE. */
		const char *what = "";
		uint64_t first = 0, last = 0;
		if ((rc = wr_snapfile_drain(&w.file, &what)) < 0)
			snapshot_failed(rc, what);
		if (wr_recheck_by_workers(&w.seg, w.in, w.back, false, &first, &last) > 0)
			wr_recheck_changed(first, last);
		if ((rc = wr_snapfile_finish(&w.file, &what)) < 0)
			snapshot_failed(rc, what);
	}
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
