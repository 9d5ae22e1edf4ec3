/* The network sink: each run becomes one DATA packet on the next channel
 * (writer/wr_net.h), its payload from the worker's arena buffer where the
 * worker read the pages (packed) or compressed them, except that with
 * sendfile a long extent of data pages goes from the guest file itself.  Prepare is the receiver's "prepared"; commit
 * asks the front end, then tells the receiver (doc/architecture.md, "The
 * handoff"). */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_snapfile.h"
#include "protocol/proto_state.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include "workers/wk_arena.h"
#include "writer/wr_net.h"
#include "writer/wr_recheck.h"
#include "writer/wr_sink.h"

struct net_sink {
	struct wr_net net;
	bool rounds, zstd;
	/* The run being sent, in pieces: of the arena buffer, or of the guest
	 * file (wr_net_file_piece). */
	struct iovec pieces[WK_RECORD_MAX_PAGES / 2 + 1];
};

static struct net_sink ns;

/* Set once we have told the receiver to commit: from then on only a
 * well-formed refusal proves that it did not (doc/architecture.md, "The
 * handoff"), and the front end keeps the guest stopped unless told 'N'. */
static bool commit_asked;

static noreturn void die_refused(uint32_t status)
{
	/* 'N': not committed.  If it cannot be told, the front end keeps the
	 * guest stopped: the safe side. */
	if (commit_asked)
		(void)stage_write_byte(WRITER_FD_COMMIT, 'N');
	if (status == PROTO_RESULT_LOCAL_FAILURE)
		stage_die(STAGE_EXIT_FAILED, "the receiver failed on its side (its own output says why)");
	if (status == PROTO_E_DEST_FULL)
		stage_die(STAGE_EXIT_FAILED, "%s", proto_strerror(PROTO_E_DEST_FULL));
	stage_die(STAGE_EXIT_FAILED, "the receiver refused the transfer: %s", proto_strerror((enum proto_err)status));
}

/* A failed send or wait for the receiver: the guest file shrank under a
 * send from its mapping (EFAULT), the link died (--io-timeout), the
 * receiver refused a packet (it says why before it hangs up), or what the
 * kernel said. */
static noreturn void net_failed(struct wr_source *src, int rc, const char *what)
{
	stage_die_if_fault(STAGE_MAP_GUEST, rc);
	if (wr_net_link_dead(&ns.net, rc))
		stage_die(STAGE_EXIT_FAILED, "the link to %s is dead: no progress for %d s (--io-timeout)", ns.net.peer,
			  ns.net.io_timeout_ms / 1000);
	/* Paused: the receiver may have refused pages the guest changed. */
	if (!ns.rounds)
		wr_source_after_failure(src);
	uint32_t status;
	if ((rc == -EPIPE || rc == -ECONNRESET || rc == -EBADMSG) && wr_net_why_refused(&ns.net, 1000, &status) == 0 &&
	    status != PROTO_OK)
		die_refused(status);
	stage_die(STAGE_EXIT_FAILED, "%s: %s", what, wr_net_why(&ns.net, rc));
}

static void sent(struct wr_source *src, int rc, const struct proto_packet *p)
{
	if (rc < 0)
		net_failed(src, rc, "sending to the receiver");
	stage_stat_add(src->stats, SHM_STAT_PACKETS, 1);
	if (p->payload_len)
		stage_stat_add(src->stats, SHM_STAT_BYTES, p->payload_len);
}

/* A RAW or SPARSE run's data pages as pieces to send; returns how many, and
 * *present: the data pages.  They lie packed in the arena buffer, in order
 * (workers/worker_main.c); adjacent pieces there go as one. */
static uint32_t data_pieces(const struct wr_source *src, const struct wr_run *r, const uint8_t *arena,
			    uint32_t *present)
{
	const uint64_t page = src->geo.page_size;
	const struct proto_desc *d = &r->d;
	uint32_t n = 0, packed = 0, k = 0, start, len;
	while (wr_run_next_extent(r, &k, &start, &len)) {
		const uint8_t *from = wr_net_file_piece(&ns.net, (d->first_page + start) * page, len * page);
		if (!from)
			from = arena + packed * page;
		struct iovec *last = n ? &ns.pieces[n - 1] : NULL;
		if (last && (const uint8_t *)last->iov_base + last->iov_len == from)
			last->iov_len += len * page;
		else
			ns.pieces[n++] = (struct iovec){ (void *)from, len * page };
		packed += len;
	}
	*present = packed;
	return n;
}

static void net_put(struct wr_sink *s, const struct wr_run *r)
{
	struct wr_source *src = s->src;
	const struct proto_desc *d = &r->d;
	const size_t page = src->geo.page_size;
	struct proto_packet p = { .type = PROTO_PKT_DATA, .encoding = d->encoding, .round = src->round,
				  .n_pages = d->n_pages, .first_page = d->first_page };
	const uint8_t *arena = src->arena[r->worker] + d->buffer * src->frame_size;
	uint32_t present = d->n_pages, prefix = 0, n_pieces = 1;
	switch (d->encoding) {
	case PROTO_ENC_ZERO:
		stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages);
		sent(src, wr_net_send(&ns.net, &p, NULL, -1, 0), &p);
		return;
	case PROTO_ENC_RAW:
	case PROTO_ENC_SPARSE:
		n_pieces = data_pieces(src, r, arena, &present);
		if (n_pieces > WR_NET_IOV - 2) /* runs are at most 4 MiB: 512 extents of 4 KiB pages */
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %u extents in one run", r->worker,
				  n_pieces);
		if (d->encoding == PROTO_ENC_SPARSE)
			prefix = proto_sparse_bitmap_bytes(d->n_pages);
		p.payload_len = (uint32_t)(prefix + present * page);
		/* The worker's CRC of the pages (SPARSE: of the bitmap, then the pages). */
		p.payload_crc = d->payload_len;
		break;
	case PROTO_ENC_ZSTD:
	case PROTO_ENC_ZSTD_SPARSE: {
		if (!ns.zstd)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: zstd without compression", r->worker);
		uint32_t crc;
		if (d->encoding == PROTO_ENC_ZSTD_SPARSE) {
			proto_sparse_bitmap_some(r->rec.bitmap, d->n_pages, &present); /* checked in take_run */
			prefix = proto_sparse_bitmap_bytes(d->n_pages);
		}
		if (!proto_desc_frame_crc(arena, src->frame_size, d->payload_len, &crc) ||
		    d->payload_len >= (uint64_t)present * page)
			stage_die(STAGE_EXIT_FAILED, "descriptor from worker %u: %s", r->worker,
				  proto_strerror(PROTO_E_PAYLOAD_LEN));
		p.payload_len = prefix + d->payload_len;
		p.payload_crc = crc; /* the worker's, over the bitmap then the frame */
		/* Counted as sent, once: a worker's own counts also hold runs it
		 * compressed and died before handing over, compressed again by its
		 * replacement. */
		stage_stat_add(src->stats, SHM_STAT_IN_BYTES, (uint64_t)present * page);
		stage_stat_add(src->stats, SHM_STAT_OUT_BYTES, d->payload_len);
		ns.pieces[0] = (struct iovec){ (void *)arena, d->payload_len };
		break;
	}
	}
	stage_stat_add(src->stats, SHM_STAT_ZERO_PAGES, d->n_pages - present);
	/* The bitmap is copied into the packet's slot; the buffer goes back
	 * once the kernel is done with what it holds. */
	sent(src, wr_net_send_iov(&ns.net, &p, r->rec.bitmap, prefix, ns.pieces, n_pieces, (int32_t)r->worker,
				  d->buffer),
	     &p);
}

static void net_round_end(struct wr_sink *s)
{
	int rc = wr_net_sync(&ns.net, s->src->round);
	if (rc < 0)
		net_failed(s->src, rc, "sending to the receiver");
}

static unsigned net_idle(struct wr_sink *s, struct pollfd *pfd, unsigned max)
{
	/* What is gathered goes out before we sleep, not after; buffers whose
	 * sends completed go back before the workers wait for them. */
	int rc = wr_net_flush(&ns.net);
	if (rc == 0)
		rc = wr_net_reap(&ns.net);
	if (rc < 0)
		net_failed(s->src, rc, "sending to the receiver");
	/* Workers may be waiting for buffers that only a completion frees. */
	return wr_net_pollfds(&ns.net, pfd, max);
}

static void net_progress(struct wr_sink *s)
{
	int rc = wr_net_flush(&ns.net);
	if (rc == 0)
		rc = wr_net_reap(&ns.net);
	if (rc < 0)
		net_failed(s->src, rc, "sending to the receiver");
}

static void check_answer(struct wr_source *src, int rc, uint32_t status)
{
	if (rc < 0)
		net_failed(src, rc, "finishing the migration");
	if (rc > 0)
		stage_die(STAGE_EXIT_FAILED, "the receiver's answer: %s", proto_strerror((enum proto_err)rc));
	if (status != PROTO_OK)
		die_refused(status);
}

/* Prepared: every check passed there and the copy is durable, but it is
 * committed only when we say so. */
static void net_prepare(struct wr_sink *s)
{
	uint32_t status = PROTO_OK;
	int rc = wr_net_finish(&ns.net, &status);
	check_answer(s->src, rc, status);
}

/* The front end decides whether the prepared copy is committed: it knows
 * whether the source's VMM still holds the guest paused for us (the lease)
 * and whether the user cancelled.  One byte each way on WRITER_FD_COMMIT. */
static bool front_end_says_commit(void)
{
	int rc = stage_write_byte(WRITER_FD_COMMIT, 'P');
	if (rc < 0)
		stage_die_errno(rc, "asking the front end to commit");
	int c = stage_read_byte(WRITER_FD_COMMIT);
	if (c < 0)
		stage_die(STAGE_EXIT_PEER, "the front end went away before it decided the commit");
	return c == 'C';
}

static void net_commit(struct wr_sink *s, bool changed, uint64_t first, uint64_t last)
{
	struct wr_source *src = s->src;
	bool commit = !changed && front_end_says_commit();
	uint32_t status = PROTO_OK;
	commit_asked = commit;
	int rc = wr_net_commit(&ns.net, commit);
	if (rc == 0 && commit) {
		stage_test_hook("commit-asked");
		rc = wr_net_committed(&ns.net, &status);
	}
	if (changed)
		wr_recheck_changed(first, last);
	if (!commit)
		stage_die(STAGE_EXIT_FAILED, "the commit was called off; the receiver keeps nothing");
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	stage_stat_set(src->stats, SHM_STAT_EVENT_US, (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u);
	stage_stat_set(src->stats, SHM_STAT_ZC_SENDS, wr_net_zc_sends(&ns.net));
	stage_stat_set(src->stats, SHM_STAT_ZC_COPIED, wr_net_zc_copied(&ns.net));
	stage_stat_set(src->stats, SHM_STAT_SENDFILE_BYTES, wr_net_sendfile_bytes(&ns.net));
	check_answer(src, rc, status);
}

static void net_check_cancel(struct wr_sink *s)
{
	if (atomic_load_explicit(&s->src->seg.hdr->cancel, memory_order_acquire)) {
		wr_net_cancel(&ns.net);
		stage_die(STAGE_EXIT_FAILED, "cancelled");
	}
}

bool wr_sink_net_rounds(void)
{
	return ns.rounds;
}

/* The migrate mode's arguments, parsed before anything else is touched. */
static struct {
	const char *to;
	uint32_t channels;
	enum wr_zerocopy zerocopy;
	enum net_tls_kind tls;
	int connect_timeout_ms, io_timeout_ms;
} args;

bool wr_sink_net_args(void)
{
	static const char *const tls_kinds[] = NET_TLS_KIND_NAMES;
	static const char *const zc_modes[] = { "off", "auto", "on", "sendfile", NULL };
	static const enum wr_zerocopy zc_values[] = { WR_ZC_OFF, WR_ZC_AUTO, WR_ZC_ON, WR_ZC_SENDFILE };
	args.to = stage_arg_str("to");
	args.channels = (uint32_t)stage_arg_u64("channels", 1, PROTO_MAX_CHANNELS);
	args.zerocopy = zc_values[stage_arg_choice("zerocopy", zc_modes)];
	args.tls = (enum net_tls_kind)stage_arg_choice("tls", tls_kinds);
	ns.zstd = stage_arg_flag("zstd");
	args.connect_timeout_ms = (int)stage_arg_u64("connect-timeout-ms", 0, 3600000);
	ns.rounds = stage_arg_flag("rounds");
	args.io_timeout_ms = (int)stage_arg_u64("io-timeout-ms", 0, 86400000);
	return args.tls != NET_TLS_NONE;
}

/* A VMM's device state, sent on the main channel. */
struct wr_device_state {
	uint8_t *bytes;
	uint32_t len;
};

/* The state, whole, from the memfd the front end filled (fstat, pread:
 * before lock-down); the fd is closed once read.  Dies on a bad length. */
static void read_device_state(int fd, struct wr_device_state *out)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		stage_die_errno(-errno, "fstat of the device state");
	if (st.st_size <= 0 || (uint64_t)st.st_size > PROTO_SNAP_STATE_MAX)
		stage_die(STAGE_EXIT_FAILED, "the device state is %lld bytes: %s", (long long)st.st_size,
			  proto_strerror(PROTO_E_DEVICE_STATE_LEN));
	out->bytes = malloc((size_t)st.st_size);
	if (!out->bytes)
		stage_die_errno(-ENOMEM, "allocating the device state");
	int rc = dio_pread_full(fd, out->bytes, (uint64_t)st.st_size, 0);
	if (rc < 0)
		stage_die_errno(rc, "reading the device state");
	out->len = (uint32_t)st.st_size;
	close(fd);
}

/* migrate --qmp: the VMM's device state on the main channel, after every
 * channel's handshake (protocol/proto_state.h), inside TLS when TLS is on. */
static void send_device_state(const struct wr_device_state *state)
{
	uint8_t header[PROTO_STATE_HEADER_SIZE];
	proto_state_header_encode(&(struct proto_state_header){ .length = state->len,
							      .crc = proto_crc32c(0, state->bytes, state->len) },
				  header);
	int rc = net_conn_send_all(&ns.net.main, header, sizeof(header));
	if (rc == 0)
		rc = net_conn_send_all(&ns.net.main, state->bytes, state->len);
	if (rc < 0)
		stage_die_errno(rc, "sending the device state to %s", args.to);
}

/* migrate --qmp: every channel is up and the receiver has taken our offer;
 * only now does the front end stop the guest and take its device state
 * ('S': we are ready for it; 'G': it is in WRITER_FD_STATE), so that a
 * migration that cannot start never stops the guest, and its downtime
 * holds no connecting or handshakes (doc/qemu.md). */
static void await_device_state(const struct wr_source *src, struct wr_device_state *state)
{
	int rc = stage_write_byte(WRITER_FD_COMMIT, 'S');
	if (rc < 0)
		stage_die_errno(rc, "asking the front end for the device state");
	if (stage_read_byte(WRITER_FD_COMMIT) != 'G')
		stage_die(STAGE_EXIT_PEER, "the front end went away before it handed over the device state");
	read_device_state(WRITER_FD_STATE(src->n_workers), state);
}

void wr_sink_net_init(struct wr_sink *s, struct wr_source *src, int *max_fd, bool device_state)
{
	struct net_tls_creds *creds;
	char why[256] = "";
	int rc = net_tls_creds_load(&creds, NET_TLS_CLIENT, args.tls, WRITER_FD_CREDS, why, sizeof(why));
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	struct proto_handshake hs = { .geo = src->geo, .n_channels = (uint16_t)args.channels,
				      .features = (ns.zstd ? PROTO_F_ZSTD : 0) | (ns.rounds ? PROTO_F_ROUNDS : 0) |
						  (device_state ? PROTO_F_DEVICE_STATE : 0) };
	if (getrandom(hs.session_id, sizeof(hs.session_id), 0) != sizeof(hs.session_id))
		stage_die_errno(-errno, "getrandom for the session id");
	/* sendfile has no MSG_NOSIGNAL: a receiver that went away must be
	 * EPIPE, reported, not a silent death by SIGPIPE. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		stage_die_errno(-errno, "ignoring SIGPIPE");
	char what[256] = "";
	struct wr_guest guest = { .fd = STAGE_FD_GUEST, .bytes = src->geo.guest_pages * src->geo.page_size };
	rc = wr_net_open(&ns.net, args.to, &hs, creds, args.zerocopy, &guest, args.connect_timeout_ms,
			     args.io_timeout_ms, what, sizeof(what));
	if (rc < 0)
		stage_die_errno(rc, "%s", what);
	if (rc > 0)
		stage_die(STAGE_EXIT_FAILED, "%s", what);
	if (device_state) {
		struct wr_device_state state;
		await_device_state(src, &state);
		send_device_state(&state);
		free(state.bytes);
	}
	ns.net.buffer_done = wr_source_give_back;
	ns.net.ctx = src;
	stage_stat_set(src->stats, SHM_STAT_FLAGS,
		       (ns.net.zerocopy ? SHM_FLAG_ZEROCOPY : 0) | (ns.net.sendfile ? SHM_FLAG_SENDFILE : 0));
	/* sockets: the main channel, then the data channels, after our fds */
	*max_fd = ns.net.main.fd > *max_fd ? ns.net.main.fd : *max_fd;
	for (uint32_t i = 0; i < args.channels; i++)
		*max_fd = ns.net.ch[i].conn.fd > *max_fd ? ns.net.ch[i].conn.fd : *max_fd;
	for (int k = 0; ns.net.tls && k < 2; k++)
		*max_fd = ns.net.tls_wake[k] > *max_fd ? ns.net.tls_wake[k] : *max_fd;
	*s = (struct wr_sink){ .put = net_put, .round_end = net_round_end, .idle = net_idle,
			       .progress = net_progress, .prepare = net_prepare, .commit = net_commit,
			       .check_cancel = net_check_cancel, .src = src };
}
