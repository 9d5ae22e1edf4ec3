#include "dest/ds_net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "net/net_socket.h"
#include "protocol/proto_state.h"
#include "protocol/proto_crc32c.h"
#include "dest/ds_commit.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"

/* Statistics are updated by every receiving thread. */
static void stat_add(struct ds_net *r, int which, uint64_t v)
{
	atomic_fetch_add_explicit(&r->stats->v[which], v, memory_order_relaxed);
}

static int send_result(struct ds_net *r, uint32_t status)
{
	uint8_t packet[PROTO_RESULT_PACKET_SIZE];
	proto_result_packet_encode(status, packet);
	return net_conn_send_all(&r->main, packet, sizeof(packet));
}

/* Tell the sender why (best effort), then end with the same message. */
static noreturn void __attribute__((format(printf, 3, 4)))
fail(struct ds_net *r, uint32_t status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&r->main_lock); /* held until we exit: one message */
	if (r->main.fd >= 0)
		(void)send_result(r, status);
	stage_die(STAGE_EXIT_FAILED, "%s", msg);
}

/* How long a connection may stay silent: a little longer than --io-timeout,
 * so that on a dead link the kernel's verdict (keepalive, after
 * --io-timeout) comes first and a silent sender on a live link is told
 * apart from it. */
int ds_net_silence_ms(const struct ds_net *r)
{
	if (r->io_timeout_ms <= 0)
		return 0;
	return r->io_timeout_ms + (r->io_timeout_ms / 4 > 2000 ? r->io_timeout_ms / 4 : 2000);
}

static noreturn void truncated(struct ds_net *r, uint32_t c, const char *what)
{
	/* A cancelling sender says so on the main channel before its data
	 * channels close: let the main thread report that instead (it does at
	 * once; 200 ms is a wide margin). */
	struct timespec pause = { 0, 200 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	fail(r, PROTO_E_TRUNCATED, "data channel %u: the sender closed the connection in the middle of %s "
		"(truncated stream)", c, what);
}

/* SO_RCVTIMEO expired: the link answers keepalive probes, the sender sent nothing. */
static noreturn void idle(struct ds_net *r, uint32_t c)
{
	fail(r, PROTO_RESULT_LOCAL_FAILURE, "data channel %u: nothing from the sender at %s for more than %d s "
	     "(--io-timeout)", c, r->peer, r->io_timeout_ms / 1000);
}

/* The kernel gave the connection up (TCP_USER_TIMEOUT, keepalive). */
static noreturn void dead_link(struct ds_net *r)
{
	fail(r, PROTO_RESULT_LOCAL_FAILURE, "the link to %s is dead: no progress for %d s (--io-timeout)", r->peer,
	     r->io_timeout_ms / 1000);
}

/* A failed receive on data channel c: the one line that says why. */
static noreturn void recv_failed(struct ds_net *r, uint32_t c, int rc, const char *what)
{
	if (rc == -EAGAIN || rc == -EWOULDBLOCK)
		idle(r, c);
	if (net_is_dead_link(rc))
		dead_link(r);
	if (rc == -ECONNRESET)
		truncated(r, c, what);
	if (rc == -EBADMSG)
		fail(r, PROTO_E_TLS_RECORD, "data channel %u: receiving %s: %s", c, what, net_conn_why(&r->ch[c].conn, rc));
	if (rc == -EFAULT && r->place.map)
		fail(r, PROTO_E_DEST_FULL, "%s", r->place.full); /* a page of the mapping it could not fault in */
	stage_die_errno(rc, "data channel %u: receiving %s", c, what);
}

/* Have at least `need` (<= DS_STAGING_BYTES) bytes staged.  It reads ahead
 * a little, so that a stream of small packets costs few recv calls, but not
 * much: what lands here is copied once more, where a large payload read
 * straight from the socket is not. */
static void stage_at_least(struct ds_net *r, uint32_t c, uint32_t need, const char *what)
{
	struct ds_channel *ch = &r->ch[c];
	if (ch->fill - ch->start >= need)
		return;
	if (ch->start + (need > DS_READAHEAD ? need : DS_READAHEAD) > DS_STAGING_BYTES) {
		memmove(ch->staging, ch->staging + ch->start, ch->fill - ch->start);
		ch->fill -= ch->start;
		ch->start = 0;
	}
	while (ch->fill - ch->start < need) {
		uint32_t want = ch->start + need - ch->fill;
		want = want > DS_READAHEAD ? want : DS_READAHEAD;
		if (want > DS_STAGING_BYTES - ch->fill)
			want = DS_STAGING_BYTES - ch->fill;
		ssize_t n = net_conn_recv(&ch->conn, ch->staging + ch->fill, want);
		if (n < 0)
			recv_failed(r, c, (int)n, what);
		if (n == 0)
			truncated(r, c, what);
		ch->fill += (uint32_t)n;
	}
}

/* Fill dst exactly: from what is staged first, the rest straight from the
 * socket (payloads skip the staging copy). */
static void recv_or_fail(struct ds_net *r, uint32_t c, void *dst, size_t len, const char *what)
{
	struct ds_channel *ch = &r->ch[c];
	uint8_t *at = dst;
	if (ch->start < ch->fill) {
		size_t take = ch->fill - ch->start < len ? ch->fill - ch->start : len;
		memcpy(at, ch->staging + ch->start, take);
		ch->start += (uint32_t)take;
		at += take;
		len -= take;
	}
	if (ch->start == ch->fill)
		ch->start = ch->fill = 0;
	while (len) {
		/* TLS hands over what it unprotected, a record at most at a time;
		 * a plain socket fills the whole buffer in one call. */
		ssize_t n = ch->conn.tls ? net_conn_recv(&ch->conn, at, len) : recv(ch->conn.fd, at, len, MSG_WAITALL);
		if (n < 0 && !ch->conn.tls && errno == EINTR)
			continue;
		if (n < 0)
			recv_failed(r, c, ch->conn.tls ? (int)n : -errno, what);
		if (n == 0)
			truncated(r, c, what);
		at += n;
		len -= (size_t)n;
	}
}

/* Raw pages straight into the mapped destination.  A page the filesystem
 * has no room for fails the recv (EFAULT, in recv_failed) or faults in a
 * copy from the staging buffer or out of TLS (SIGBUS, here): either way the
 * sender learns why. */
static void recv_into_mapping(struct ds_net *r, uint32_t c, uint8_t *at, size_t len)
{
	sigjmp_buf env;
	if (sigsetjmp(env, 0)) {
		(void)stage_fault_recovered();
		fail(r, PROTO_E_DEST_FULL, "%s", r->place.full);
	}
	stage_fault_guard(&env);
	recv_or_fail(r, c, at, len, "raw pages");
	stage_fault_guard(NULL);
}

/* Compare a DATA packet's payload with its checksum, right after receiving
 * it.  A paused migration fails at once, naming the packet.  In a live one
 * the guest may have written a page after the worker took the checksum and
 * before TCP read it: ds_suspect.h decides after every END.  A zstd frame
 * was compressed into the worker's own buffer, never sent from the guest:
 * its mismatch fails at once in either. */
static void payload_checked(struct ds_net *r, uint32_t c, const struct proto_packet *p, uint32_t crc)
{
	if (crc == p->payload_crc) {
		ds_suspect_clear(&r->suspect, p->first_page, p->n_pages, p->round);
		return;
	}
	if (!r->suspect.bits || proto_encoding_is_zstd(p->encoding))
		fail(r, PROTO_E_PAYLOAD_CHECKSUM, "data channel %u, packet %llu (pages %llu..%llu): %s (corrupted in transit)",
		     c, (unsigned long long)p->seq, (unsigned long long)p->first_page,
		     (unsigned long long)(p->first_page + p->n_pages - 1), proto_strerror(PROTO_E_PAYLOAD_CHECKSUM));
	ds_suspect_mark(&r->suspect, &(struct ds_mismatch){ .channel = c, .round = p->round, .n_pages = p->n_pages,
							   .seq = p->seq, .first_page = p->first_page });
}

/* After every END: a mismatch that no later intact copy explains. */
static void check_suspects(struct ds_net *r)
{
	struct ds_mismatch m;
	uint64_t first, last;
	if (!ds_suspect_unexplained(&r->suspect, &m, &first, &last))
		return;
	if (m.n_pages)
		fail(r, PROTO_E_PAYLOAD_CHECKSUM,
		     "data channel %u, packet %llu (pages %llu..%llu, round %u): %s (corrupted in transit: pages "
		     "%llu..%llu never came again)",
		     m.channel, (unsigned long long)m.seq, (unsigned long long)m.first_page,
		     (unsigned long long)(m.first_page + m.n_pages - 1), m.round,
		     proto_strerror(PROTO_E_PAYLOAD_CHECKSUM), (unsigned long long)first, (unsigned long long)last);
	fail(r, PROTO_E_PAYLOAD_CHECKSUM, "pages %llu..%llu: %s (corrupted in transit)", (unsigned long long)first,
	     (unsigned long long)last, proto_strerror(PROTO_E_PAYLOAD_CHECKSUM));
}

static noreturn void place_failed(struct ds_net *r, int rc, uint64_t off, uint64_t len)
{
	char line[512];
	ds_place_failure(&r->place, rc, off / r->geo.page_size, len / r->geo.page_size, line, sizeof(line));
	fail(r, ds_place_is_full(&r->place, rc) ? PROTO_E_DEST_FULL : PROTO_RESULT_LOCAL_FAILURE, "%s", line);
}

static void place_or_fail(struct ds_net *r, const uint8_t *src, uint64_t off, uint64_t len)
{
	int rc = ds_place_write(&r->place, src, len, off);
	if (rc < 0)
		place_failed(r, rc, off, len);
}

static void check_end(struct ds_net *r, uint32_t c)
{
	struct ds_channel *ch = &r->ch[c];
	uint8_t body[PROTO_END_BODY_SIZE];
	struct proto_end_body e;
	recv_or_fail(r, c, body, sizeof(body), "the end marker");
	enum proto_err err = proto_end_body_decode(body, sizeof(body), &e);
	if (err == PROTO_OK && (e.packets != ch->seq || e.pages != ch->pages || e.payload_bytes != ch->payload_bytes))
		err = PROTO_E_END_TOTALS;
	if (err == PROTO_OK && e.crc_of_crcs != ch->crc_of_crcs)
		err = PROTO_E_END_CHECKSUM;
	if (err != PROTO_OK)
		fail(r, err, "data channel %u: end marker: %s", c, proto_strerror(err));
	ch->ended = true;
}

/* Pages the source has as zero.  A fresh destination is all holes in round
 * 1; in later rounds they may have been sent before, and an existing file
 * (--in-place) may hold anything where it held data. */
static void zero_pages(struct ds_net *r, uint32_t round, uint64_t first, uint32_t n)
{
	uint64_t off = first * r->geo.page_size, len = (uint64_t)n * r->geo.page_size;
	stat_add(r, SHM_STAT_ZERO_PAGES, n);
	int64_t rc = 0;
	if (round > 1)
		rc = ds_place_punch(&r->place, off, len);
	else if (r->inplace)
		rc = ds_inplace_zero(r->inplace, &r->place, off, len);
	if (rc < 0)
		place_failed(r, (int)rc, off, len);
}

/* A bitmap's zero pages, each stretch as ZERO pages. */
static void zero_absent(struct ds_net *r, const struct proto_packet *p, const uint8_t *bitmap)
{
	uint32_t k = 0, start, len, done = 0;
	while (proto_sparse_next_extent(bitmap, p->n_pages, &k, &start, &len)) {
		if (start > done)
			zero_pages(r, p->round, p->first_page + done, start - done);
		done = start + len;
	}
	if (done < p->n_pages)
		zero_pages(r, p->round, p->first_page + done, p->n_pages - done);
}

/* A window of data and zero pages: the bitmap, then each run of present
 * pages. */
static void place_sparse(struct ds_net *r, uint32_t c, const struct proto_packet *p)
{
	uint8_t bitmap[PROTO_SPARSE_BITMAP_MAX];
	uint32_t bitmap_len = proto_sparse_bitmap_bytes(p->n_pages), page = r->geo.page_size;
	recv_or_fail(r, c, bitmap, bitmap_len, "a sparse page bitmap");
	enum proto_err err = proto_sparse_bitmap_check(bitmap, p->n_pages, (p->payload_len - bitmap_len) / page);
	if (err != PROTO_OK)
		fail(r, err, "data channel %u, packet %llu: %s", c, (unsigned long long)r->ch[c].seq,
		     proto_strerror(err));
	/* The present pages come back to back: one receive into the channel's
	 * payload buffer, checked there, then written run by run
	 * (dest/ds_place.h says why not straight into a mapping). */
	uint8_t *data = r->ch[c].payload;
	recv_or_fail(r, c, data, p->payload_len - bitmap_len, "sparse pages");
	payload_checked(r, c, p, proto_crc32c(proto_crc32c(0, bitmap, bitmap_len), data, p->payload_len - bitmap_len));
	uint32_t k = 0, start, len;
	while (proto_sparse_next_extent(bitmap, p->n_pages, &k, &start, &len)) {
		place_or_fail(r, data, (p->first_page + start) * page, (uint64_t)len * page);
		data += (size_t)len * page;
	}
	zero_absent(r, p, bitmap);
}

/* A zstd payload goes whole into a free buffer of an inflater, which
 * places its pages: ZSTD a frame of every page, ZSTD_SPARSE a bitmap and
 * a frame of the data pages, whose zero pages are ours to place.  It is
 * checked before the inflater sees it. */
static void place_zstd(struct ds_net *r, uint32_t c, const struct proto_packet *p)
{
	uint32_t i, b, prefix = 0, present;
	uint8_t *payload = ds_inflaters_take(&r->inflaters, &i, &b);
	if (p->encoding == PROTO_ENC_ZSTD_SPARSE) {
		prefix = proto_sparse_bitmap_bytes(p->n_pages);
		recv_or_fail(r, c, payload, prefix, "a sparse page bitmap");
		enum proto_err err = proto_sparse_bitmap_some(payload, p->n_pages, &present);
		if (err == PROTO_OK && p->payload_len - prefix >= (uint64_t)present * r->geo.page_size)
			err = PROTO_E_PAYLOAD_LEN; /* a frame never as large as its pages */
		if (err != PROTO_OK)
			fail(r, err, "data channel %u, packet %llu: %s", c, (unsigned long long)r->ch[c].seq,
			     proto_strerror(err));
	}
	recv_or_fail(r, c, payload + prefix, p->payload_len - prefix, "a compressed payload");
	payload_checked(r, c, p, proto_crc32c(0, payload, p->payload_len));
	if (prefix)
		zero_absent(r, p, payload);
	ds_inflaters_post(&r->inflaters, i, b, p->encoding, p->first_page, p->n_pages, p->payload_len - prefix);
}

/* One packet from channel c. */
static void handle_packet(struct ds_net *r, uint32_t c)
{
	struct ds_channel *ch = &r->ch[c];
	uint8_t header[PROTO_PACKET_HEADER_SIZE];
	stage_at_least(r, c, sizeof(header), "a packet header");
	recv_or_fail(r, c, header, sizeof(header), "a packet header");
	struct proto_packet p;
	enum proto_err err = proto_packet_decode(header, sizeof(header), &r->geo, &p);
	if (err == PROTO_OK && p.seq != ch->seq)
		err = PROTO_E_SEQUENCE;
	if (err == PROTO_OK && (p.type == PROTO_PKT_DATA || p.type == PROTO_PKT_SYNC) && p.round != ch->round)
		err = PROTO_E_ROUND;
	if (err == PROTO_OK && (p.type == PROTO_PKT_RESULT ||
				(p.type == PROTO_PKT_SYNC && !(r->hs.features & PROTO_F_ROUNDS))))
		err = PROTO_E_PACKET_TYPE;
	if (err == PROTO_OK && p.type == PROTO_PKT_DATA && proto_encoding_is_zstd(p.encoding) &&
	    !(r->hs.features & PROTO_F_ZSTD))
		err = PROTO_E_ENCODING;
	if (err != PROTO_OK)
		fail(r, err, "data channel %u, packet %llu: %s", c, (unsigned long long)ch->seq, proto_strerror(err));
	if (p.type == PROTO_PKT_END) {
		check_end(r, c);
		return;
	}
	if (p.type == PROTO_PKT_SYNC) {
		ch->synced = true;
		ch->seq++;
		ch->crc_of_crcs = proto_crc32c(ch->crc_of_crcs, header + 44, 4);
		stat_add(r, SHM_STAT_PACKETS, 1);
		return;
	}
	/* Offsets were checked against the geometry by proto_packet_decode. */
	if (p.encoding == PROTO_ENC_RAW) {
		/* Into the channel's payload buffer, checked there, written once;
		 * or straight into a mapped destination (ds_place.h), checked there. */
		const uint64_t off = p.first_page * r->geo.page_size;
		uint8_t *at = r->place.map ? r->place.map + off : ch->payload;
		if (r->place.map)
			recv_into_mapping(r, c, at, p.payload_len);
		else
			recv_or_fail(r, c, at, p.payload_len, "raw pages");
		payload_checked(r, c, &p, proto_crc32c(0, at, p.payload_len));
		if (!r->place.map)
			place_or_fail(r, at, off, p.payload_len);
	} else if (proto_encoding_is_zstd(p.encoding)) {
		place_zstd(r, c, &p);
	} else if (p.encoding == PROTO_ENC_SPARSE) {
		place_sparse(r, c, &p);
	} else {
		zero_pages(r, p.round, p.first_page, p.n_pages);
		ds_suspect_clear(&r->suspect, p.first_page, p.n_pages, p.round);
	}
	ch->seq++;
	ch->pages += p.n_pages;
	ch->payload_bytes += p.payload_len;
	ch->crc_of_crcs = proto_crc32c(ch->crc_of_crcs, header + 44, 4);
	stat_add(r, SHM_STAT_PAGES, p.n_pages);
	stat_add(r, SHM_STAT_BYTES, p.payload_len);
	stat_add(r, SHM_STAT_PACKETS, 1);
}

/* Channel c reached the end of its round: wait until every channel has, and
 * every inflater has placed what it was given, so that older versions of
 * pages are all placed before any newer one is (design.md §3). */
static void end_of_round(struct ds_net *r, uint32_t c)
{
	if (pthread_barrier_wait(&r->round_end) == PTHREAD_BARRIER_SERIAL_THREAD) {
		ds_inflaters_end_round(&r->inflaters);
		stage_stat_set(r->stats, SHM_STAT_ROUND, r->ch[c].round + 1);
	}
	pthread_barrier_wait(&r->round_end);
	r->ch[c].synced = false;
	r->ch[c].round++;
}


/* The sender's RESULT on the main channel: during the transfer only a
 * cancellation; after our "prepared", its commit decision. */
static uint32_t read_sender_result(struct ds_net *r)
{
	uint8_t header[PROTO_PACKET_HEADER_SIZE], body[PROTO_RESULT_BODY_SIZE];
	int rc = net_conn_recv_all(&r->main, header, sizeof(header));
	if (rc == -ECONNRESET) {
		/* A sender that died mid-packet left a data channel that can say
		 * more precisely what it lost: give its thread a moment to. */
		struct timespec pause = { 0, 500 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		fail(r, PROTO_E_TRUNCATED, "main channel: the sender closed the connection (it failed or was killed)");
	}
	if (rc < 0 && net_is_dead_link(rc))
		dead_link(r);
	if (rc == -EBADMSG)
		fail(r, PROTO_E_TLS_RECORD, "main channel: %s", net_conn_why(&r->main, rc));
	if (rc < 0)
		stage_die_errno(rc, "main channel");
	struct proto_packet p;
	uint32_t status = 0;
	enum proto_err err = proto_packet_decode(header, sizeof(header), &r->geo, &p);
	if (err == PROTO_OK && p.type != PROTO_PKT_RESULT)
		err = PROTO_E_PACKET_TYPE;
	if (err == PROTO_OK && (rc = net_conn_recv_all(&r->main, body, sizeof(body))) < 0)
		stage_die_errno(rc, "main channel");
	if (err == PROTO_OK)
		err = proto_result_decode(body, sizeof(body), &status);
	if (err != PROTO_OK)
		fail(r, err, "main channel: %s", proto_strerror(err));
	return status;
}

static noreturn void sender_gave_up(uint32_t status)
{
	stage_die(STAGE_EXIT_FAILED, "%s", status == PROTO_E_CANCELLED ? "cancelled: the sender gave up the migration"
									: proto_strerror((enum proto_err)status));
}

/* The main channel carries nothing until the end, except a cancellation. */
static void check_main(struct ds_net *r)
{
	sender_gave_up(read_sender_result(r));
}

struct channel_arg {
	struct ds_net *r;
	uint32_t c;
};

static void *channel_thread(void *arg)
{
	struct channel_arg *a = arg;
	struct ds_net *r = a->r;
	struct ds_channel *ch = &r->ch[a->c];
	ds_live_thread_start();
	pthread_barrier_wait(&r->registered);
	pthread_barrier_wait(&r->start);
	while (!ch->ended) {
		handle_packet(r, a->c);
		if (ch->synced)
			end_of_round(r, a->c);
	}
	if (atomic_fetch_add(&r->n_ended, 1) + 1 == r->n_channels) {
		/* Every channel is past its END: nothing can clear a page now. */
		check_suspects(r);
		char one = 1;
		if (write(r->done_pipe[1], &one, 1) < 0)
			stage_die_errno(-errno, "waking the main thread");
	}
	ds_live_thread_end();
	return NULL;
}

void ds_net_receive_state(struct ds_net *r, int out_fd)
{
	uint8_t header[PROTO_STATE_HEADER_SIZE];
	struct proto_state_header h;
	int rc = net_conn_recv_all(&r->main, header, sizeof(header));
	if (rc < 0)
		stage_die_errno(rc, "main channel: receiving the device state from %s", r->peer);
	enum proto_err err = proto_state_header_decode(header, &h);
	if (err != PROTO_OK)
		fail(r, err, "main channel: the device state: %s", proto_strerror(err));
	uint8_t *state = malloc(h.length);
	if (!state)
		stage_die_errno(-ENOMEM, "allocating the device state");
	if ((rc = net_conn_recv_all(&r->main, state, h.length)) < 0)
		stage_die_errno(rc, "main channel: receiving the device state from %s", r->peer);
	if (proto_crc32c(0, state, h.length) != h.crc)
		fail(r, PROTO_E_DEVICE_STATE_CHECKSUM, "main channel: %s (corrupted in transit)",
		     proto_strerror(PROTO_E_DEVICE_STATE_CHECKSUM));
	if ((rc = dio_pwrite_full(out_fd, state, h.length, 0)) < 0)
		stage_die_errno(rc, "handing the device state to the front end");
	free(state);
	close(out_fd);
}

/* The receive stage dying of anything but fail() (a ring whose inflater
 * failed, say) during the transfer: the sender hears that it failed here,
 * not just a reset connection, and that the destination is full when an
 * inflater died of that.  fail() holds the lock: it said so itself. */
static void tell_sender_we_failed(void *arg)
{
	struct ds_net *r = arg;
	if (pthread_mutex_trylock(&r->main_lock) != 0 || r->main.fd < 0)
		return;
	/* The lock is held until we exit: one message. */
	bool full = ds_inflaters_found_dest_full(&r->inflaters);
	(void)send_result(r, full ? PROTO_E_DEST_FULL : PROTO_RESULT_LOCAL_FAILURE);
}

void ds_net_start_threads(struct ds_net *r)
{
	static struct channel_arg args[PROTO_MAX_CHANNELS];
	int rc;
	if ((rc = pthread_barrier_init(&r->registered, NULL, r->n_channels + 1)) != 0 ||
	    (rc = pthread_barrier_init(&r->start, NULL, r->n_channels + 1)) != 0 ||
	    (rc = pthread_barrier_init(&r->round_end, NULL, r->n_channels)) != 0 ||
	    (rc = pthread_mutex_init(&r->main_lock, NULL)) != 0)
		stage_die_errno(-rc, "setting up the receiving threads");
	stage_set_last_word(tell_sender_we_failed, r);
	if (pipe2(r->done_pipe, O_CLOEXEC) < 0)
		stage_die_errno(-errno, "pipe");
	if ((r->hs.features & PROTO_F_ROUNDS) && (rc = ds_suspect_init(&r->suspect, r->geo.guest_pages)) < 0)
		stage_die_errno(rc, "allocating the suspect-page bitmap");
	for (uint32_t c = 0; c < r->n_channels; c++) {
		args[c] = (struct channel_arg){ r, c };
		if ((rc = pthread_create(&r->threads[c], NULL, channel_thread, &args[c])) != 0)
			stage_die_errno(-rc, "starting the thread of data channel %u", c);
	}
	/* Registering may allocate (liburcu's thread-local reader), and so
	 * may the first grace period: both before lock-down. */
	pthread_barrier_wait(&r->registered);
	ds_live_warm_up(&r->inflaters.live);
}

/* The sender's front end answers at once; this bounds a sender that hangs. */
#define COMMIT_DECISION_MS 60000

/* A sender that ends some channels while others wait for the end of a round
 * would leave their threads waiting forever. */
#define LOPSIDED_END_MS 30000

void ds_net_receive(struct ds_net *r)
{
	pthread_barrier_wait(&r->start);
	int lopsided_ms = 0;
	struct ds_notices notices = { .fill = 0 };
	int notice_fd = RECEIVE_FD_COMMIT;
	while (atomic_load(&r->n_ended) < r->n_channels) {
		struct pollfd pfd[3] = { { .fd = r->main.fd, .events = POLLIN },
					 { .fd = r->done_pipe[0], .events = POLLIN },
					 { .fd = notice_fd, .events = POLLIN } };
		int ready = net_conn_buffered(&r->main) ? 1 : poll(pfd, 3, 200);
		if (ready < 0 && errno != EINTR)
			stage_die_errno(-errno, "poll on the main channel");
		if (ready > 0 && (pfd[0].revents || net_conn_buffered(&r->main)) &&
		    atomic_load(&r->n_ended) < r->n_channels)
			check_main(r);
		/* The front end closing its end is its death, which ends us anyway
		 * (stage_tie_to_supervisor): just stop watching. */
		if (ready > 0 && pfd[2].revents && !ds_commit_read_notices(&notices, &r->inflaters.live))
			notice_fd = -1;
		uint32_t ended = atomic_load(&r->n_ended);
		lopsided_ms = ended > 0 && ended < r->n_channels ? lopsided_ms + 200 : 0;
		if (lopsided_ms > LOPSIDED_END_MS)
			fail(r, PROTO_E_ROUND, "data channels: %u ended while the others still wait for the end of a round",
			     ended);
	}
	for (uint32_t c = 0; c < r->n_channels; c++)
		pthread_join(r->threads[c], NULL);
	ds_inflaters_finish(&r->inflaters);
	if (fdatasync(STAGE_FD_GUEST) < 0 && errno != EINVAL)
		fail(r, PROTO_RESULT_LOCAL_FAILURE, "fdatasync of the destination: %s", strerror(errno));
	/* Everything checked and durable: "prepared".  The sender decides; only
	 * its RESULT(OK) lets the front end commit, and only once the front end
	 * has do we tell the sender (doc/architecture.md, "The handoff"). */
	int rc = send_result(r, PROTO_OK);
	if (rc < 0)
		stage_die_errno(rc, "telling the sender the copy is prepared");
	struct pollfd pfd = { .fd = r->main.fd, .events = POLLIN };
	int ready = net_conn_buffered(&r->main) ? 1 : 0;
	while (!ready && (ready = poll(&pfd, 1, COMMIT_DECISION_MS)) < 0 && errno == EINTR)
		ready = 0;
	if (ready < 0)
		stage_die_errno(-errno, "waiting for the sender's commit");
	if (ready == 0)
		stage_die(STAGE_EXIT_FAILED, "the sender did not confirm the commit within %d s; nothing was committed",
			  COMMIT_DECISION_MS / 1000);
	uint32_t status = read_sender_result(r);
	if (status != PROTO_OK)
		sender_gave_up(status);
	/* Anything more from the sender now is its close or a cancellation:
	 * then nothing may be committed. */
	pfd.revents = 0;
	if (net_conn_buffered(&r->main) || poll(&pfd, 1, 0) != 0)
		stage_die(STAGE_EXIT_FAILED, "the sender went away before the commit; nothing was committed");
	bool committed = ds_commit_ask(&notices);
	/* This answer is the last word: one said after it would contradict it. */
	stage_set_last_word(NULL, NULL);
	rc = send_result(r, committed ? PROTO_OK : PROTO_RESULT_LOCAL_FAILURE);
	if (rc < 0) {
		ds_commit_unsent();
		stage_die(STAGE_EXIT_FAILED, "the sender went away during the commit (%s)", net_conn_why(&r->main, rc));
	}
	stage_test_hook("answered");
	ds_commit_answered();
}
