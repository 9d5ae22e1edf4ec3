/* The receiver's session set-up, before lock-down (doc/security.md,
 * "Before authentication").
 *
 * Every connection is accepted at once and taken through TLS and our
 * handshake concurrently, in one thread driving non-blocking sockets, each
 * within an absolute deadline from its accept (not renewed by each byte).
 * At most PENDING_MAX wait at a time; one more closes the oldest.  A
 * connection that fails (garbage, a failed TLS handshake or credential, a
 * wrong session, a second sender) is closed with a log line: nothing it
 * does ends the receive or holds up the real sender.  The receive ends here
 * only for what the real (authenticated) sender asks and this end cannot
 * give: a destination of another size, or channels that never come. */
#include "dest/ds_net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/net_socket.h"
#include "stage/stage.h"

#define PENDING_MAX 128
#define AUTH_DEADLINE_MS 10000	/* from accept to an offer we can answer */
#define DATA_CHANNEL_WAIT_MS 30000
#define LOGGED_MAX 50		/* refusals logged one by one; then a count at the end */
#define TLS_RECORD_HANDSHAKE 0x16 /* the first byte of every TLS ClientHello */

enum pending_state {
	P_SNIFF,	/* nothing read yet: TLS or our handshake? */
	P_TLS,		/* TLS handshake under way */
	P_OFFER,	/* reading our 64-byte offer */
	P_HELD,		/* a data channel's offer, waiting for its main channel */
};

struct pending {
	struct net_conn conn;
	enum pending_state state;
	short events;
	int64_t deadline_ms;
	struct net_addr peer;
	uint8_t offer[PROTO_HANDSHAKE_SIZE];
	uint32_t got;
	struct proto_handshake h;
};

struct session {
	struct ds_net *r;
	const struct net_tls_creds *creds;
	struct pending p[PENDING_MAX];	/* [0, n), oldest first */
	uint32_t n;
	bool have_main;
	uint32_t n_data;
	unsigned logged, unlogged;
};

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void __attribute__((format(printf, 2, 3))) note(struct session *s, const char *fmt, ...)
{
	if (s->logged++ >= LOGGED_MAX) {
		s->unlogged++;
		return;
	}
	char line[512];
	int n = snprintf(line, sizeof(line), "%s: notice: ", stage_name());
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
}

/* The refusals past LOGGED_MAX, counted in one line (before the receive
 * goes on, or ends). */
static void note_count(struct session *s)
{
	if (!s->unlogged)
		return;
	unsigned more = s->unlogged;
	s->logged = 0;
	s->unlogged = 0;
	note(s, "%u more connections were refused or closed (not logged one by one)", more);
}

static noreturn void __attribute__((format(printf, 2, 3))) give_up(struct session *s, const char *fmt, ...)
{
	note_count(s);
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	stage_die(STAGE_EXIT_FAILED, "%s", msg);
}

/* Take p out of the table; close it unless it was kept. */
static void drop(struct session *s, uint32_t k, bool close_it)
{
	if (close_it) {
		/* Closing with unread bytes would reset the connection, and the
		 * peer might lose our refusal to the reset: read them first. */
		uint8_t scrap[4096];
		(void)!recv(s->p[k].conn.fd, scrap, sizeof(scrap), MSG_DONTWAIT);
		net_conn_close(&s->p[k].conn);
	}
	memmove(&s->p[k], &s->p[k + 1], (s->n - k - 1) * sizeof(s->p[0]));
	s->n--;
}

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? -errno : 0;
}

/* Answer an offer; on a refusal, log why and close the connection. */
static int answer(struct session *s, uint32_t k, const struct proto_handshake *agreed, enum proto_err status,
		  const char *detail)
{
	struct pending *p = &s->p[k];
	/* A 64-byte answer into a socket that sent us nothing back to read
	 * cannot fill its buffer: blocking here is bounded. */
	int rc = set_blocking(p->conn.fd);
	if (rc == 0)
		rc = net_channel_answer(&p->conn, agreed, status);
	if (status != PROTO_OK) {
		note(s, "refused a connection from %s: %s", p->peer.text, detail ? detail : proto_strerror(status));
		drop(s, k, true);
		return -1;
	}
	if (rc < 0) {
		note(s, "lost the connection from %s while answering its handshake: %s", p->peer.text,
		     net_conn_why(&p->conn, rc));
		drop(s, k, true);
		return -1;
	}
	return 0;
}

static void version_detail(char *buf, size_t len, const struct proto_handshake *h)
{
	snprintf(buf, len, "%s: the sender speaks wire protocol version %u, this receiver version %u",
		 proto_strerror(PROTO_E_VERSION), h->version, PROTO_VERSION);
}

static void accept_data(struct session *s, uint32_t k)
{
	struct ds_net *r = s->r;
	struct pending *p = &s->p[k];
	enum proto_err err = proto_handshake_match(&p->h, &r->hs);
	if (err == PROTO_OK && r->ch[p->h.channel_id].conn.fd > 0)
		err = PROTO_E_CHANNEL_DUPLICATE;
	if (answer(s, k, err == PROTO_OK ? &p->h : NULL, err, NULL) < 0)
		return;
	struct ds_channel *ch = &r->ch[p->h.channel_id];
	ch->conn = p->conn;
	ch->round = 1;
	ch->staging = malloc(DS_STAGING_BYTES);
	ch->payload = malloc((size_t)r->geo.max_run_pages * r->geo.page_size);
	if (!ch->staging || !ch->payload)
		stage_die_errno(-ENOMEM, "the buffers of data channel %u", p->h.channel_id);
	s->n_data++;
	drop(s, k, false);
}

static void accept_main(struct session *s, uint32_t k)
{
	struct ds_net *r = s->r;
	struct pending *p = &s->p[k];
	if (s->have_main) {
		answer(s, k, NULL, PROTO_E_BUSY, NULL);
		return;
	}
	if (r->inplace && p->h.geo.guest_pages * p->h.geo.page_size != r->inplace->size) {
		/* The sender was let in and wants what this end cannot give. */
		char why[160];
		snprintf(why, sizeof(why), "the guest is %llu bytes but the destination (--in-place) is %llu",
			 (unsigned long long)(p->h.geo.guest_pages * p->h.geo.page_size),
			 (unsigned long long)r->inplace->size);
		(void)set_blocking(p->conn.fd);
		(void)net_channel_answer(&p->conn, NULL, PROTO_E_DEST_SIZE);
		give_up(s, "refused main channel from %s: %s", p->peer.text, why);
	}
	bool sends_state = (p->h.features & PROTO_F_DEVICE_STATE) != 0;
	if (sends_state != r->want_state) {
		/* receive --qmp moves a whole VM, and a plain receive takes RAM only:
		 * either way this sender's migration cannot be what the user asked. */
		enum proto_err err = sends_state ? PROTO_E_STATE_UNWANTED : PROTO_E_STATE_MISSING;
		(void)set_blocking(p->conn.fd);
		(void)net_channel_answer(&p->conn, NULL, err);
		give_up(s, "refused main channel from %s: %s", p->peer.text, proto_strerror(err));
	}
	if (answer(s, k, &p->h, PROTO_OK, NULL) < 0)
		return;
	r->hs = p->h;
	r->geo = p->h.geo;
	r->n_channels = p->h.n_channels;
	r->main = p->conn;
	snprintf(r->peer, sizeof(r->peer), "%s", p->peer.text);
	s->have_main = true;
	drop(s, k, false);
	/* Data channels that offered before their main channel came. */
	for (uint32_t j = s->n; j-- > 0;)
		if (s->p[j].state == P_HELD)
			accept_data(s, j);
}

static void on_offer(struct session *s, uint32_t k)
{
	struct pending *p = &s->p[k];
	enum proto_err err = net_channel_decode_offer(p->offer, &p->h);
	char detail[200];
	if (err != PROTO_OK) {
		if (err == PROTO_E_VERSION)
			version_detail(detail, sizeof(detail), &p->h);
		answer(s, k, NULL, err, err == PROTO_E_VERSION ? detail : NULL);
	} else if (p->h.channel_kind == PROTO_CHAN_MAIN) {
		accept_main(s, k);
	} else if (s->have_main) {
		accept_data(s, k);
	} else {
		p->state = P_HELD;
	}
}

/* The first byte tells TLS from our own handshake.  It is consumed (a
 * peek would leave the socket readable, and a peer that sends one byte and
 * stops would keep this loop spinning): TLS gets it back. */
static int sniff(struct session *s, uint32_t k)
{
	struct pending *p = &s->p[k];
	uint8_t b;
	ssize_t n = recv(p->conn.fd, &b, 1, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	if (n <= 0) {
		note(s, "the connection from %s closed before it said anything", p->peer.text);
		drop(s, k, true);
		return -1;
	}
	if (s->creds && b == TLS_RECORD_HANDSHAKE) {
		int rc = net_tls_server(&p->conn.tls, p->conn.fd, s->creds, &b, 1);
		if (rc < 0)
			stage_die_errno(rc, "starting TLS");
		p->state = P_TLS;
		return 0;
	}
	if (s->creds) {
		/* A plain sender ("PFHS..."): tell it why, in words it reads. */
		if (b == 'P') {
			answer(s, k, NULL, PROTO_E_TLS_REQUIRED, "it does not use TLS, and this receiver requires it");
		} else {
			note(s, "refused a connection from %s: not a TLS handshake", p->peer.text);
			drop(s, k, true);
		}
		return -1;
	}
	if (b == TLS_RECORD_HANDSHAKE) {
		note(s, "refused a connection from %s: it speaks TLS, but this receiver was started without "
		     "credentials (--psk-file or --tls-creds)", p->peer.text);
		drop(s, k, true);
		return -1;
	}
	p->offer[0] = b;
	p->got = 1;
	p->state = P_OFFER;
	return 0;
}

/* Move p on as far as its socket allows (it may leave the table). */
static void advance(struct session *s, uint32_t k)
{
	struct pending *p = &s->p[k];
	for (;;) {
		int rc;
		switch (p->state) {
		case P_SNIFF:
			if (sniff(s, k) != 0)
				return;
			break;
		case P_TLS:
			rc = net_tls_step(p->conn.tls, &p->events);
			if (rc < 0) {
				note(s, "refused a connection from %s: %s", p->peer.text,
				     rc == -EBADMSG ? net_tls_why(p->conn.tls) : strerror(-rc));
				drop(s, k, true);
				return;
			}
			if (rc > 0)
				return;
			p->state = P_OFFER;
			p->events = POLLIN;
			break;
		case P_OFFER: {
			ssize_t n = net_conn_recv(&p->conn, p->offer + p->got, sizeof(p->offer) - p->got);
			if (n == -EAGAIN)
				return;
			if (n <= 0) {
				note(s, "the connection from %s %s before its handshake", p->peer.text,
				     n == 0 ? "closed" : net_conn_why(&p->conn, (int)n));
				drop(s, k, true);
				return;
			}
			p->got += (uint32_t)n;
			if (p->got < sizeof(p->offer))
				break;
			on_offer(s, k);
			return;
		}
		case P_HELD:
			return;
		}
	}
}

static void take_connections(struct session *s, int64_t now)
{
	for (;;) {
		struct net_addr peer;
		int fd = net_accept(s->r->listen_fd, &peer);
		if (fd == -EAGAIN || fd == -EINTR || fd == -ECONNABORTED)
			return;
		if (fd < 0)
			stage_die_errno(fd, "accept");
		if (s->n == PENDING_MAX) {
			/* Make room: the oldest has had the longest to prove itself. */
			note(s, "closed the connection from %s: %u connections are waiting to authenticate, the "
			     "most allowed", s->p[0].peer.text, PENDING_MAX);
			drop(s, 0, true);
		}
		int rc = net_set_io_timeout(fd, s->r->io_timeout_ms);
		if (rc < 0)
			stage_die_errno(rc, "socket timeouts on the connection from %s", peer.text);
		s->p[s->n++] = (struct pending){ .conn = { .fd = fd, .tls = NULL }, .state = P_SNIFF, .events = POLLIN,
						 .deadline_ms = now + AUTH_DEADLINE_MS, .peer = peer };
	}
}

void ds_net_accept_session(struct ds_net *r, const char *listen_addr, const struct net_tls_creds *creds,
			   int accept_timeout_ms)
{
	static struct session s;
	s = (struct session){ .r = r, .creds = creds };
	struct net_addr addr;
	const char *why = "";
	r->main = (struct net_conn){ .fd = -1, .tls = NULL };
	if (net_resolve(listen_addr, 1, &addr, &why) < 0)
		stage_die(STAGE_EXIT_FAILED, "listen address %s: %s", listen_addr, why);
	r->listen_fd = net_listen(&addr);
	if (r->listen_fd < 0)
		stage_die_errno(r->listen_fd, "listen on %s", listen_addr);
	if (fcntl(r->listen_fd, F_SETFL, O_NONBLOCK) < 0)
		stage_die_errno(-errno, "listen on %s", listen_addr);
	stage_stat_set(r->stats, SHM_STAT_STATE, SHM_PROC_LISTENING);

	int64_t give_up_at = accept_timeout_ms > 0 ? now_ms() + accept_timeout_ms : INT64_MAX;
	bool waiting_for_data = false;
	for (;;) {
		int64_t now = now_ms();
		if (s.have_main && s.n_data == r->n_channels)
			break;
		if (s.have_main && !waiting_for_data) {
			waiting_for_data = true;
			give_up_at = now + DATA_CHANNEL_WAIT_MS;
		}
		if (now >= give_up_at && !s.have_main)
			give_up(&s, "no main channel connected within %d s", accept_timeout_ms / 1000);
		if (now >= give_up_at)
			give_up(&s, "only %u of %u data channels connected within %d s", s.n_data, r->n_channels,
				DATA_CHANNEL_WAIT_MS / 1000);
		/* [0] new connections, [1] the accepted main channel: it says
		 * nothing until the end, so anything there means its sender
		 * closed it or gave up; then [2 + k] the pending ones. */
		struct pollfd pfd[PENDING_MAX + 2] = { { .fd = r->listen_fd, .events = POLLIN },
						       { .fd = s.have_main ? r->main.fd : -1, .events = POLLIN } };
		int64_t wake = give_up_at;
		bool ready_now = false;
		for (uint32_t k = 0; k < s.n; k++) {
			struct pending *p = &s.p[k];
			pfd[k + 2] = (struct pollfd){ .fd = p->state == P_HELD ? -1 : p->conn.fd, .events = p->events };
			wake = p->deadline_ms < wake ? p->deadline_ms : wake;
			ready_now |= p->state != P_HELD && net_conn_buffered(&p->conn);
		}
		int wait = ready_now ? 0 : wake == INT64_MAX ? -1 : wake - now > 0 ? (int)(wake - now) : 0;
		uint32_t n_polled = s.n;
		if (poll(pfd, n_polled + 2, wait) < 0 && errno != EINTR)
			stage_die_errno(-errno, "poll while accepting connections");
		now = now_ms();
		if (pfd[1].revents)
			give_up(&s, "the sender at %s closed its main channel or gave up before its %u data channels "
				"connected (%u did)", r->peer, r->n_channels, s.n_data);
		/* Newest first: advancing one may take it (and held ones below
		 * it) out of the table; one advanced by mistake finds nothing
		 * to read and waits. */
		for (uint32_t k = n_polled; k-- > 0;)
			if (k < s.n && (pfd[k + 2].revents || net_conn_buffered(&s.p[k].conn)))
				advance(&s, k);
		for (uint32_t k = s.n; k-- > 0;)
			if (s.p[k].deadline_ms <= now) {
				note(&s, "closed the connection from %s: %s within %d s", s.p[k].peer.text,
				     s.p[k].state == P_HELD ? "its main channel did not come" : "it did not authenticate",
				     AUTH_DEADLINE_MS / 1000);
				drop(&s, k, true);
			}
		if (pfd[0].revents)
			take_connections(&s, now);
	}
	while (s.n)
		drop(&s, s.n - 1, true);
	note_count(&s);
	close(r->listen_fd);
	r->listen_fd = -1;
	/* From here on a sender may pause between packets, but not forever. */
	int rc = set_blocking(r->main.fd);
	if (rc == 0)
		rc = net_set_timeout(r->main.fd, ds_net_silence_ms(r));
	for (uint32_t c = 0; rc == 0 && c < r->n_channels; c++)
		if ((rc = set_blocking(r->ch[c].conn.fd)) == 0)
			rc = net_set_timeout(r->ch[c].conn.fd, ds_net_silence_ms(r));
	if (rc < 0)
		stage_die_errno(rc, "socket timeouts");
}
