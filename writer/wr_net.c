#include "writer/wr_net.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net_socket.h"
#include "writer/wr_tls_send.h"
#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"

/* The receiver flushes and checks before it answers: a receiver that answers
 * TCP (keepalive) but not with its result is given this long.  One that
 * stops answering altogether is noticed within --io-timeout (keepalive). */
#define RESULT_TIMEOUT_MS 120000

/* Can the kernel splice pages out of the guest file (tmpfs, memfd and
 * ordinary files can; some file systems cannot)?  0 or -errno. */
static int guest_splices(const struct wr_guest *g)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	loff_t off = 0;
	ssize_t r = splice(g->fd, &off, pipefd[1], NULL, g->bytes < 4096 ? g->bytes : 4096, SPLICE_F_NONBLOCK);
	int err = r < 0 ? -errno : 0;
	close(pipefd[0]);
	close(pipefd[1]);
	return err;
}

/* "HOST" of "HOST:PORT" or "[V6]:PORT": what the receiver's certificate must name. */
static void host_of(const char *hostport, char *host, size_t len)
{
	const char *colon = strrchr(hostport, ':');
	size_t n = colon ? (size_t)(colon - hostport) : strlen(hostport);
	if (n >= 2 && hostport[0] == '[' && hostport[n - 1] == ']') {
		hostport++;
		n -= 2;
	}
	snprintf(host, len, "%.*s", (int)n, hostport);
}

/* A connection the receiver closed during set-up: once one sender's
 * channels are all in it stops listening and closes what waits in its
 * accept queue (doc/security.md), so a second sender meets this at any
 * step, by timing. */
#define CLOSED_BY_RECEIVER " (the receiver closed the connection: it serves another sender"
static bool closed_by_receiver(int rc)
{
	return rc == -ECONNRESET || rc == -EPIPE;
}

/* Connect, TLS, and our handshake on one channel: 0 with *out set, or the
 * failure (-errno or a positive enum proto_err). */
static int open_channel(const struct net_addr *addr, struct proto_handshake *hs, const struct net_tls_creds *creds,
			int timeout_ms, int io_timeout_ms, char *what, size_t what_len, const char *name,
			struct net_conn *out)
{
	struct net_conn c = { .fd = net_connect(addr, timeout_ms), .tls = NULL };
	if (c.fd < 0) {
		snprintf(what, what_len, "connect %s%s", addr->text, closed_by_receiver(c.fd) ? CLOSED_BY_RECEIVER ")" : "");
		return c.fd;
	}
	int refused = 0;
	int rc = net_set_io_timeout(c.fd, io_timeout_ms);
	if (rc < 0) {
		snprintf(what, what_len, "setting the progress timeout (--io-timeout) on %s %s", name, addr->text);
		net_conn_close(&c);
		return rc;
	}
	if (creds) {
		char host[128];
		host_of(addr->text, host, sizeof(host));
		rc = net_tls_client(&c.tls, c.fd, creds, host, timeout_ms);
		if (rc < 0) {
			if (rc == -EBADMSG)
				snprintf(what, what_len, "%s %s: %s", name, addr->text, net_tls_why(c.tls));
			else
				snprintf(what, what_len, "TLS handshake on %s %s%s", name, addr->text,
					 closed_by_receiver(rc) ? CLOSED_BY_RECEIVER ", or it does not use TLS with the "
										     "same kind of credentials)" : "");
			net_conn_close(&c);
			return rc == -EBADMSG ? PROTO_E_TLS_REQUIRED : rc;
		}
	}
	rc = net_channel_offer(&c, hs, &refused);
	if (rc != 0) {
		if (rc == PROTO_E_VERSION && !refused) /* its answer is in another version */
			snprintf(what, what_len, "%s %s: %s: the receiver speaks another wire protocol version, "
				 "this sender version %u", name, addr->text, proto_strerror(PROTO_E_VERSION), PROTO_VERSION);
		else if (rc > 0)
			snprintf(what, what_len, "%s %s: %s%s", name, addr->text,
				 refused ? "the receiver refused it: " : "", proto_strerror((enum proto_err)rc));
		else if (rc == -EBADMSG)
			snprintf(what, what_len, "handshake on %s %s: %s", name, addr->text, net_conn_why(&c, rc));
		else
			snprintf(what, what_len, "handshake on %s %s%s", name, addr->text,
				 closed_by_receiver(rc) ? CLOSED_BY_RECEIVER ")" : "");
		net_conn_close(&c);
		return rc == -EBADMSG ? PROTO_E_TLS_RECORD : rc;
	}
	*out = c;
	return 0;
}

int wr_net_open(struct wr_net *n, const char *hostport, const struct proto_handshake *hs,
		const struct net_tls_creds *creds, enum wr_zerocopy zc, const struct wr_guest *guest,
		int connect_timeout_ms, int io_timeout_ms, char *what, size_t what_len)
{
	memset(n, 0, sizeof(*n));
	n->main.fd = -1;
	n->tls = creds != NULL;
	if (n->tls) {
		/* Protecting records reads the pages anyway: no zerocopy, no
		 * sendfile (kernel TLS would allow both; doc/security.md). */
		if (zc == WR_ZC_ON || zc == WR_ZC_SENDFILE) {
			snprintf(what, what_len, "--zerocopy %s cannot be used with TLS: the pages are encrypted "
				 "in user space", zc == WR_ZC_ON ? "on" : "sendfile");
			return -EINVAL;
		}
		zc = WR_ZC_OFF;
		if (pipe2(n->tls_wake, O_CLOEXEC | O_NONBLOCK) < 0) {
			snprintf(what, what_len, "a pipe for the TLS senders");
			return -errno;
		}
	}
	n->io_timeout_ms = io_timeout_ms;
	snprintf(n->peer, sizeof(n->peer), "%s", hostport);
	n->hs = *hs;
	n->guest = *guest;
	if (zc == WR_ZC_SENDFILE || zc == WR_ZC_AUTO) {
		int rc = guest_splices(guest);
		if (rc < 0 && zc == WR_ZC_SENDFILE) {
			snprintf(what, what_len, "--zerocopy sendfile: the kernel cannot splice from the guest file");
			return rc;
		}
		n->sendfile = rc == 0;
		if (n->sendfile)
			zc = WR_ZC_OFF; /* no SO_ZEROCOPY: nothing would use it */
	}
	if (n->sendfile) {
		/* PROT_NONE and never touched: no page tables, no memory. */
		void *names = mmap(NULL, guest->bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (names == MAP_FAILED) {
			snprintf(what, what_len, "reserving an address range to name the guest file's pieces");
			return -errno;
		}
		n->guest.base = names;
	}
	n->n_channels = hs->n_channels;
	n->ch = calloc(n->n_channels, sizeof(*n->ch));
	if (!n->ch) {
		snprintf(what, what_len, "allocating channel state");
		return -ENOMEM;
	}
	struct net_addr addr;
	const char *why = "";
	if (net_resolve(hostport, 0, &addr, &why) < 0) {
		snprintf(what, what_len, "address %s: %s", hostport, why);
		return -EINVAL;
	}
	struct proto_handshake h = *hs;
	h.channel_kind = PROTO_CHAN_MAIN;
	h.channel_id = 0;
	int rc = open_channel(&addr, &h, creds, connect_timeout_ms, io_timeout_ms, what, what_len, "main channel to",
			      &n->main);
	if (rc != 0)
		return rc;
	int fd = n->main.fd;
	int one = 1;
	/* Read only once, for the receiver's RESULT: set now, before lock-down.
	 * Sends on it (a cancellation) keep the progress timeout. */
	struct timeval result_wait = { .tv_sec = RESULT_TIMEOUT_MS / 1000 };
	if (io_timeout_ms > RESULT_TIMEOUT_MS)
		result_wait.tv_sec = io_timeout_ms / 1000;
	rc = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &result_wait, sizeof(result_wait)) < 0 ? -errno : 0;
	if (rc < 0) {
		snprintf(what, what_len, "socket timeout on the main channel");
		return rc;
	}
	for (uint32_t i = 0; i < n->n_channels; i++) {
		char name[48];
		snprintf(name, sizeof(name), "data channel %u to", i);
		h.channel_kind = PROTO_CHAN_DATA;
		h.channel_id = (uint8_t)i;
		rc = open_channel(&addr, &h, creds, connect_timeout_ms, io_timeout_ms, what, what_len, name, &n->ch[i].conn);
		if (rc != 0)
			return rc;
		fd = n->ch[i].conn.fd;
		if (n->tls && (rc = wr_tls_sender_start(&n->ch[i].sender, n->ch[i].conn.tls, n->tls_wake[1])) < 0) {
			snprintf(what, what_len, "starting the TLS sender of data channel %u", i);
			return rc;
		}
		if (zc == WR_ZC_OFF || zc == WR_ZC_SENDFILE)
			continue;
		if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0) {
			int err = errno;
			if (zc == WR_ZC_ON) {
				snprintf(what, what_len, "--zerocopy on: the kernel refused SO_ZEROCOPY");
				return -err;
			}
			continue;
		}
		n->ch[i].zerocopy = true;
	}
	n->zerocopy = n->n_channels && n->ch[0].zerocopy;
	/* Sends block at most --io-timeout without progress (SO_SNDTIMEO, and
	 * TCP_USER_TIMEOUT ends a connection whose data goes unacknowledged). */
	return 0;
}

/* Heard nothing from the peer on fd for --io-timeout (acknowledgements,
 * keepalive answers)? */
static bool silent_for_timeout(int fd, int io_timeout_ms)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	return io_timeout_ms > 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	       ti.tcpi_last_ack_recv >= (uint32_t)io_timeout_ms;
}

const char *wr_net_why(const struct wr_net *n, int neg_errno)
{
	if (neg_errno != -EBADMSG)
		return strerror(-neg_errno);
	if (net_tls_failed(n->main.tls))
		return net_tls_why(n->main.tls);
	for (uint32_t i = 0; n->ch && i < n->n_channels; i++)
		if (net_tls_failed(n->ch[i].conn.tls))
			return net_tls_why(n->ch[i].conn.tls);
	return "TLS failed";
}

bool wr_net_link_dead(const struct wr_net *n, int neg_errno)
{
	if (net_is_dead_link(neg_errno))
		return true;
	/* The kernel's verdict (ETIMEDOUT) goes to whichever call sees it
	 * first: a send that had already sent part of its bytes returns that
	 * count and the verdict is lost; the next send says only EPIPE. */
	if (n->main.fd >= 0 && silent_for_timeout(n->main.fd, n->io_timeout_ms))
		return true;
	for (uint32_t i = 0; n->ch && i < n->n_channels; i++)
		if (n->ch[i].conn.fd > 0 && silent_for_timeout(n->ch[i].conn.fd, n->io_timeout_ms))
			return true;
	return false;
}

/* sendmsg until all of iov[0..n_iov) is sent (the kernel may take part). */
static int send_iovs(struct wr_net *n, struct wr_channel *c, struct iovec *iov, size_t n_iov, int flags)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n_iov };
	bool zc = c->zerocopy;
	while (msg.msg_iovlen) {
		ssize_t r = sendmsg(c->conn.fd, &msg, MSG_NOSIGNAL | flags | (zc ? MSG_ZEROCOPY : 0));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == ENOBUFS && zc) {
			/* Too many notifications outstanding (optmem): wait for one,
			 * or copy this once if there is none to wait for. */
			if (c->zc_issued == c->zc_done)
				zc = false;
			else if ((r = wr_net_reap_channel(n, c, true)) < 0)
				return (int)r;
			continue;
		}
		if (r < 0)
			return -errno;
		if (zc)
			c->zc_issued++;
		net_iov_advance(&msg.msg_iov, &msg.msg_iovlen, (size_t)r);
	}
	return 0;
}

const void *wr_net_file_piece(const struct wr_net *n, uint64_t off, uint64_t len)
{
	if (!n->sendfile || len < WR_SENDFILE_MIN || off > n->guest.bytes || len > n->guest.bytes - off)
		return NULL;
	return n->guest.base + off;
}

static bool goes_by_sendfile(const struct wr_net *n, const struct iovec *v)
{
	const uint8_t *p = v->iov_base;
	return n->sendfile && p >= n->guest.base && (uint64_t)(p - n->guest.base) <= n->guest.bytes - v->iov_len;
}

/* The kernel holds references to the guest's pages until TCP is done with
 * them: no copy here, and nothing of ours to keep alive. */
static int sendfile_piece(struct wr_net *n, struct wr_channel *c, const struct iovec *v)
{
	off_t off = (off_t)((const uint8_t *)v->iov_base - n->guest.base);
	size_t left = v->iov_len;
	while (left) {
		ssize_t r = sendfile(c->conn.fd, n->guest.fd, &off, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EFAULT; /* the guest file ended early: it shrank under us, as a
					 * send from its mapping would say */
		left -= (size_t)r;
		c->sendfile_bytes += (uint64_t)r;
	}
	return 0;
}

/* Send every gathered packet: one sendmsg (more if the kernel takes part),
 * or with sendfile, long guest pieces spliced between sendmsgs of the rest. */
static int flush_channel(struct wr_net *n, struct wr_channel *c)
{
	if (c->queued == c->head)
		return 0;
	size_t i = 0;
	if (c->sender) {
		/* One batch in flight: the thread sends this one once the last
		 * is done; it counts as a completion (wr_net_sweep_completed). */
		int rc = wr_tls_sender_wait(c->sender);
		if (rc < 0)
			return rc;
		wr_tls_sender_post(c->sender, c->iov, c->n_iov);
		c->zc_issued++;
		i = c->n_iov;
	}
	while (i < c->n_iov) {
		int rc;
		if (goes_by_sendfile(n, &c->iov[i])) {
			rc = sendfile_piece(n, c, &c->iov[i]);
			i++;
		} else {
			size_t j = i + 1;
			while (j < c->n_iov && !goes_by_sendfile(n, &c->iov[j]))
				j++;
			rc = send_iovs(n, c, c->iov + i, j - i, j < c->n_iov ? MSG_MORE : 0);
			i = j;
		}
		if (rc < 0)
			return rc;
	}
	/* TCP completes in order: these packets are done once every
	 * notification issued so far is (at once, if this flush copied). */
	for (uint64_t slot = c->queued; slot < c->head; slot++)
		c->inflight[slot % WR_NET_INFLIGHT].need_done = c->zc_issued;
	c->queued = c->head;
	c->n_iov = 0;
	c->queued_bytes = 0;
	wr_net_sweep_completed(n, c);
	return 0;
}

int wr_net_flush(struct wr_net *n)
{
	for (uint32_t i = 0; i < n->n_channels; i++) {
		int rc = flush_channel(n, &n->ch[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

struct payload {
	const void *prefix;	/* copied into the packet's slot */
	uint32_t prefix_len;
	const struct iovec *iov;
	uint32_t n_iov;
};

static int queue_packet(struct wr_net *n, struct wr_channel *c, struct proto_packet *p, const struct payload *pl,
			int32_t worker, uint32_t buffer);

static struct wr_channel *next_channel(struct wr_net *n)
{
	struct wr_channel *c = &n->ch[n->next];
	n->next = (n->next + 1) % n->n_channels;
	return c;
}

int wr_net_send(struct wr_net *n, struct proto_packet *p, const void *payload, int32_t worker, uint32_t buffer)
{
	struct iovec iov = { (void *)payload, p->payload_len };
	struct payload pl = { .iov = &iov, .n_iov = p->payload_len ? 1 : 0 };
	return queue_packet(n, next_channel(n), p, &pl, worker, buffer);
}

int wr_net_send_iov(struct wr_net *n, struct proto_packet *p, const void *prefix, uint32_t prefix_len,
		    const struct iovec *iov, uint32_t n_iov, int32_t worker, uint32_t buffer)
{
	struct payload pl = { .prefix = prefix, .prefix_len = prefix_len, .iov = iov, .n_iov = n_iov };
	return queue_packet(n, next_channel(n), p, &pl, worker, buffer);
}

int wr_net_sync(struct wr_net *n, uint32_t round)
{
	for (uint32_t i = 0; i < n->n_channels; i++) {
		struct proto_packet p = { .type = PROTO_PKT_SYNC, .round = round };
		struct payload none = { 0 };
		int rc = queue_packet(n, &n->ch[i], &p, &none, -1, 0);
		if (rc < 0)
			return rc;
	}
	return wr_net_flush(n);
}

static int queue_packet(struct wr_net *n, struct wr_channel *c, struct proto_packet *p, const struct payload *pl,
			int32_t worker, uint32_t buffer)
{
	int rc;
	if (c->head - c->queued == WR_NET_BATCH || c->queued_bytes >= WR_NET_BATCH_BYTES ||
	    c->n_iov + 1 + pl->n_iov > WR_NET_IOV)
		if ((rc = flush_channel(n, c)) < 0)
			return rc;
	while (c->head - c->tail == WR_NET_INFLIGHT) {
		if ((rc = flush_channel(n, c)) < 0 || (rc = wr_net_reap_channel(n, c, true)) < 0)
			return rc;
	}
	p->seq = c->seq;
	uint8_t *header = c->headers[c->head % WR_NET_INFLIGHT];
	proto_packet_encode(p, header);
	if (pl->prefix_len)
		memcpy(header + PROTO_PACKET_HEADER_SIZE, pl->prefix, pl->prefix_len);
	c->iov[c->n_iov++] = (struct iovec){ header, PROTO_PACKET_HEADER_SIZE + pl->prefix_len };
	for (uint32_t k = 0; k < pl->n_iov; k++)
		c->iov[c->n_iov++] = pl->iov[k];
	c->inflight[c->head % WR_NET_INFLIGHT] =
		(struct wr_inflight){ .need_done = UINT64_MAX, .worker = worker, .buffer = buffer };
	c->head++;
	c->queued_bytes += PROTO_PACKET_HEADER_SIZE + p->payload_len;
	c->seq++;
	c->pages += p->n_pages;
	c->payload_bytes += p->payload_len;
	c->crc_of_crcs = proto_crc32c(c->crc_of_crcs, header + 44, 4);
	return 0;
}

static int send_result(struct wr_net *n, uint32_t status)
{
	uint8_t packet[PROTO_RESULT_PACKET_SIZE];
	proto_result_packet_encode(status, packet);
	return net_conn_send_all(&n->main, packet, sizeof(packet));
}

void wr_net_cancel(struct wr_net *n)
{
	(void)send_result(n, PROTO_E_CANCELLED);
}

unsigned wr_net_pollfds(const struct wr_net *n, struct pollfd *pfd, unsigned max)
{
	unsigned k = 0;
	for (uint32_t i = 0; i < n->n_channels && k < max; i++) {
		if (n->ch[i].tail == n->ch[i].queued)
			continue;
		if (n->ch[i].sender) { /* TLS: the senders' pipe, once for all of them */
			pfd[0] = (struct pollfd){ .fd = n->tls_wake[0], .events = POLLIN };
			return 1;
		}
		pfd[k++] = (struct pollfd){ .fd = n->ch[i].conn.fd, .events = 0 };
	}
	return k;
}

/* The receiver's RESULT on the main channel: > 0 an enum proto_err for a
 * malformed answer, < 0 -errno. */
static int read_result(struct wr_net *n, uint32_t *status)
{
	uint8_t header[PROTO_PACKET_HEADER_SIZE], body[PROTO_RESULT_BODY_SIZE];
	int rc = net_conn_recv_all(&n->main, header, sizeof(header));
	if (rc < 0)
		return rc;
	struct proto_packet p;
	struct proto_geometry geo = n->hs.geo;
	enum proto_err err = proto_packet_decode(header, sizeof(header), &geo, &p);
	if (err == PROTO_OK && p.type != PROTO_PKT_RESULT)
		err = PROTO_E_PACKET_TYPE;
	if (err != PROTO_OK)
		return (int)err;
	if ((rc = net_conn_recv_all(&n->main, body, sizeof(body))) < 0)
		return rc;
	err = proto_result_decode(body, sizeof(body), status);
	return err == PROTO_OK ? 0 : (int)err;
}

int wr_net_finish(struct wr_net *n, uint32_t *status)
{
	int flushed = wr_net_flush(n);
	if (flushed < 0)
		return flushed;
	for (uint32_t i = 0; i < n->n_channels; i++) {
		struct wr_channel *c = &n->ch[i];
		/* The END goes from here: the channel's thread must be done with it. */
		int rc = c->sender ? wr_tls_sender_wait(c->sender) : 0;
		if (rc < 0)
			return rc;
		struct proto_end_body e = { .packets = c->seq, .pages = c->pages, .payload_bytes = c->payload_bytes,
					    .crc_of_crcs = c->crc_of_crcs };
		struct proto_packet p = { .type = PROTO_PKT_END, .payload_len = PROTO_END_BODY_SIZE, .seq = c->seq };
		uint8_t header[PROTO_PACKET_HEADER_SIZE], body[PROTO_END_BODY_SIZE];
		proto_packet_encode(&p, header);
		proto_end_body_encode(&e, body);
		rc = net_conn_send_all(&c->conn, header, sizeof(header));
		if (rc < 0 || (rc = net_conn_send_all(&c->conn, body, sizeof(body))) < 0)
			return rc;
	}
	for (uint32_t i = 0; i < n->n_channels; i++)
		while (n->ch[i].tail != n->ch[i].queued) {
			int rc = wr_net_reap_channel(n, &n->ch[i], true);
			if (rc < 0)
				return rc;
		}
	return read_result(n, status);
}

int wr_net_why_refused(struct wr_net *n, int wait_ms, uint32_t *status)
{
	struct pollfd pfd = { .fd = n->main.fd, .events = POLLIN };
	int ready = net_conn_buffered(&n->main) ? 1 : 0;
	while (!ready && (ready = poll(&pfd, 1, wait_ms)) < 0 && errno == EINTR)
		ready = 0;
	if (ready <= 0)
		return -ETIMEDOUT;
	int rc = read_result(n, status);
	return rc != 0 ? (rc < 0 ? rc : -EPROTO) : 0;
}

int wr_net_commit(struct wr_net *n, bool commit)
{
	return send_result(n, commit ? PROTO_OK : PROTO_E_CANCELLED);
}

int wr_net_committed(struct wr_net *n, uint32_t *status)
{
	return read_result(n, status);
}

uint64_t wr_net_zc_sends(const struct wr_net *n)
{
	uint64_t s = 0;
	for (uint32_t i = 0; i < n->n_channels; i++)
		s += n->ch[i].zc_done;
	return s;
}

uint64_t wr_net_zc_copied(const struct wr_net *n)
{
	uint64_t s = 0;
	for (uint32_t i = 0; i < n->n_channels; i++)
		s += n->ch[i].zc_copied;
	return s;
}

uint64_t wr_net_sendfile_bytes(const struct wr_net *n)
{
	uint64_t s = 0;
	for (uint32_t i = 0; i < n->n_channels; i++)
		s += n->ch[i].sendfile_bytes;
	return s;
}
