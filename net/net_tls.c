#include "net/net_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <gnutls/gnutls.h>

/* TLS 1.3 only.  AES-128-GCM first: the fastest AEAD with AES-NI, and as
 * strong as the 128-bit key exchange below it.  With a key, only the
 * exchanges that add (EC)DHE: a stolen key does not open recorded
 * sessions. */
#define PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIORITY_PSK PRIORITY_X509 ":-KX-ALL:+ECDHE-PSK:+DHE-PSK"

/* Ciphertext read ahead of what GnuTLS asks for: two records per recv
 * instead of two recvs per record. */
#define READ_AHEAD (2 * (NET_TLS_RECORD_MAX + 256))
#define CRED_FILE_MAX (1u << 20)

struct net_tls_creds {
	enum net_tls_role role;
	bool psk;
	gnutls_psk_client_credentials_t psk_client;
	gnutls_psk_server_credentials_t psk_server;
	uint8_t *psk_key; /* the server's copy, for its lookup */
	size_t psk_len;
	gnutls_certificate_credentials_t x509;
	gnutls_priority_t priority;
};

struct net_tls {
	gnutls_session_t s;
	int fd;
	const struct net_tls_creds *c;
	int sys_errno;		/* what the last failed socket call said */
	bool more;		/* more records follow at once: MSG_MORE */
	char why[320];
	uint32_t rstart, rfill;	/* [rstart, rfill) of rbuf not yet given to GnuTLS */
	uint8_t rbuf[READ_AHEAD];
};

/* ---- transport: our fd, our syscalls ---- */

static ssize_t socket_failed(struct net_tls *t)
{
	t->sys_errno = errno;
	gnutls_transport_set_errno(t->s, errno);
	return -1;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
	struct net_tls *t = p;
	if (t->rstart == t->rfill) {
		void *into = len >= sizeof(t->rbuf) ? data : t->rbuf;
		size_t want = len >= sizeof(t->rbuf) ? len : sizeof(t->rbuf);
		ssize_t n;
		do
			n = recv(t->fd, into, want, 0);
		while (n < 0 && errno == EINTR);
		if (n <= 0)
			return n < 0 ? socket_failed(t) : 0;
		if (into == data)
			return n;
		t->rstart = 0;
		t->rfill = (uint32_t)n;
	}
	size_t take = t->rfill - t->rstart < len ? t->rfill - t->rstart : len;
	memcpy(data, t->rbuf + t->rstart, take);
	t->rstart += (uint32_t)take;
	return (ssize_t)take;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
	struct net_tls *t = p;
	if (t->rstart < t->rfill)
		return 1;
	struct pollfd pfd = { .fd = t->fd, .events = POLLIN };
	int r;
	do
		r = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
	while (r < 0 && errno == EINTR);
	return r;
}

static ssize_t push(gnutls_transport_ptr_t p, const giovec_t *iov, int n_iov)
{
	struct net_tls *t = p;
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n_iov };
	ssize_t n;
	do
		n = sendmsg(t->fd, &m, MSG_NOSIGNAL | (t->more ? MSG_MORE : 0));
	while (n < 0 && errno == EINTR);
	return n < 0 ? socket_failed(t) : n;
}

/* ---- credentials ---- */

static int set_why(char *why, size_t why_len, int rc, const char *fmt, const char *arg)
{
	snprintf(why, why_len, fmt, arg);
	return rc;
}

/* The whole file at dir_fd/name (dir_fd < 0: the file is fd `name_fd`). */
static int read_file(int dir_fd, const char *name, int name_fd, uint8_t **out, size_t *len)
{
	int fd = dir_fd >= 0 ? openat(dir_fd, name, O_RDONLY | O_CLOEXEC) : name_fd;
	if (fd < 0)
		return -errno;
	uint8_t *buf = malloc(CRED_FILE_MAX + 1);
	size_t got = 0;
	int rc = buf ? 0 : -ENOMEM;
	while (rc == 0) {
		ssize_t n = read(fd, buf + got, CRED_FILE_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		else if (n == 0)
			break;
		else if ((got += (size_t)n) > CRED_FILE_MAX)
			rc = -EFBIG;
	}
	if (dir_fd >= 0)
		close(fd);
	if (rc < 0 && buf) {
		explicit_bzero(buf, got);
		free(buf);
		return rc;
	}
	*out = buf;
	*len = got;
	return rc;
}

static void wipe_free(uint8_t *buf, size_t len)
{
	if (buf)
		explicit_bzero(buf, len);
	free(buf);
}

static int psk_lookup(gnutls_session_t s, const char *identity, gnutls_datum_t *key)
{
	const struct net_tls *t = gnutls_session_get_ptr(s);
	if (strcmp(identity, NET_TLS_PSK_IDENTITY) != 0)
		return -1;
	key->data = gnutls_malloc(t->c->psk_len);
	if (!key->data)
		return -1;
	memcpy(key->data, t->c->psk_key, t->c->psk_len);
	key->size = (unsigned)t->c->psk_len;
	return 0;
}

static int creds_new(struct net_tls_creds **out, enum net_tls_role role, bool psk, char *why, size_t why_len)
{
	struct net_tls_creds *c = calloc(1, sizeof(*c));
	if (!c)
		return set_why(why, why_len, -ENOMEM, "%s", "allocating TLS credentials");
	c->role = role;
	c->psk = psk;
	const char *err_pos = NULL;
	int rc = gnutls_priority_init(&c->priority, psk ? PRIORITY_PSK : PRIORITY_X509, &err_pos);
	if (rc < 0) {
		free(c);
		return set_why(why, why_len, -EINVAL, "TLS priorities: %s", gnutls_strerror(rc));
	}
	*out = c;
	return 0;
}

static int creds_psk(struct net_tls_creds **out, enum net_tls_role role, int key_fd, char *why, size_t why_len)
{
	uint8_t *key = NULL;
	size_t len = 0;
	int rc = read_file(-1, NULL, key_fd, &key, &len);
	if (rc < 0)
		return set_why(why, why_len, rc, "%s", "reading the pre-shared key file");
	while (len && (key[len - 1] == '\n' || key[len - 1] == '\r'))
		len--;
	if (len < NET_TLS_PSK_MIN || len > NET_TLS_PSK_MAX) {
		wipe_free(key, len);
		return set_why(why, why_len, -EINVAL, "pre-shared key file holds %s bytes (16 to 1024 are needed)",
			       len < NET_TLS_PSK_MIN ? "fewer than 16" : "more than 1024");
	}
	if ((rc = creds_new(out, role, true, why, why_len)) < 0) {
		wipe_free(key, len);
		return rc;
	}
	struct net_tls_creds *c = *out;
	if (role == NET_TLS_SERVER) {
		c->psk_key = key; /* kept for psk_lookup, wiped by net_tls_creds_free */
		c->psk_len = len;
		rc = gnutls_psk_allocate_server_credentials(&c->psk_server);
		if (rc == 0)
			gnutls_psk_set_server_credentials_function(c->psk_server, psk_lookup);
	} else {
		gnutls_datum_t k = { key, (unsigned)len };
		rc = gnutls_psk_allocate_client_credentials(&c->psk_client);
		if (rc == 0)
			rc = gnutls_psk_set_client_credentials(c->psk_client, NET_TLS_PSK_IDENTITY, &k,
							       GNUTLS_PSK_KEY_RAW);
		wipe_free(key, len);
	}
	if (rc < 0) {
		net_tls_creds_free(c);
		return set_why(why, why_len, -EINVAL, "pre-shared key: %s", gnutls_strerror(rc));
	}
	return 0;
}

static int creds_x509(struct net_tls_creds **out, enum net_tls_role role, int dir_fd, char *why, size_t why_len)
{
	const char *cert_name = role == NET_TLS_SERVER ? "server-cert.pem" : "client-cert.pem";
	const char *key_name = role == NET_TLS_SERVER ? "server-key.pem" : "client-key.pem";
	const char *names[3] = { "ca-cert.pem", cert_name, key_name };
	uint8_t *data[3] = { NULL, NULL, NULL };
	size_t len[3] = { 0, 0, 0 };
	int rc = 0;
	for (int k = 0; k < 3 && rc == 0; k++)
		if ((rc = read_file(dir_fd, names[k], -1, &data[k], &len[k])) < 0)
			set_why(why, why_len, rc, "--tls-creds: reading %s", names[k]);
	if (rc == 0)
		rc = creds_new(out, role, false, why, why_len);
	struct net_tls_creds *c = rc == 0 ? *out : NULL;
	int g = 0; /* GnuTLS's verdict: its own negative codes, not errno */
	if (rc == 0 && (g = gnutls_certificate_allocate_credentials(&c->x509)) < 0)
		snprintf(why, why_len, "TLS certificates: %s", gnutls_strerror(g));
	if (rc == 0 && g == 0) {
		gnutls_datum_t ca = { data[0], (unsigned)len[0] };
		g = gnutls_certificate_set_x509_trust_mem(c->x509, &ca, GNUTLS_X509_FMT_PEM);
		if (g <= 0)
			snprintf(why, why_len, "--tls-creds: ca-cert.pem: %s",
				 gnutls_strerror(g ? g : GNUTLS_E_NO_CERTIFICATE_FOUND));
		g = g <= 0 ? -1 : 0;
	}
	if (rc == 0 && g == 0) {
		gnutls_datum_t cert = { data[1], (unsigned)len[1] }, key = { data[2], (unsigned)len[2] };
		g = gnutls_certificate_set_x509_key_mem(c->x509, &cert, &key, GNUTLS_X509_FMT_PEM);
		if (g < 0)
			snprintf(why, why_len, "--tls-creds: %s and %s: %s", cert_name, key_name, gnutls_strerror(g));
	}
	for (int k = 0; k < 3; k++)
		wipe_free(data[k], len[k]);
	if (rc == 0 && g < 0) {
		net_tls_creds_free(c);
		rc = -EINVAL;
	}
	return rc;
}

void net_tls_creds_free(struct net_tls_creds *c)
{
	if (!c)
		return;
	if (c->psk_client)
		gnutls_psk_free_client_credentials(c->psk_client);
	if (c->psk_server)
		gnutls_psk_free_server_credentials(c->psk_server);
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->priority)
		gnutls_priority_deinit(c->priority);
	wipe_free(c->psk_key, c->psk_len);
	free(c);
}

int net_tls_creds_load(struct net_tls_creds **out, enum net_tls_role role, enum net_tls_kind kind, int fd,
		       char *why, size_t why_len)
{
	*out = NULL;
	if (kind == NET_TLS_NONE)
		return 0;
	int rc = kind == NET_TLS_PSK ? creds_psk(out, role, fd, why, why_len) : creds_x509(out, role, fd, why, why_len);
	if (rc < 0)
		return rc;
	close(fd);
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_MMAP_MAX, 0);
	return 0;
}

/* ---- sessions ---- */

static int session_new(struct net_tls **out, int fd, const struct net_tls_creds *c, unsigned flags)
{
	struct net_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fd = fd;
	t->c = c;
	int rc = gnutls_init(&t->s, flags | GNUTLS_NO_TICKETS);
	if (rc < 0) {
		free(t);
		return -ENOMEM;
	}
	if ((rc = gnutls_priority_set(t->s, c->priority)) == 0)
		rc = c->psk ? gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
						     c->role == NET_TLS_SERVER ? (void *)c->psk_server
									       : (void *)c->psk_client)
			    : gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
	if (rc < 0) {
		gnutls_deinit(t->s);
		free(t);
		return -EINVAL;
	}
	gnutls_session_set_ptr(t->s, t);
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_pull_function(t->s, pull);
	gnutls_transport_set_pull_timeout_function(t->s, pull_timeout);
	gnutls_transport_set_vec_push_function(t->s, push);
	*out = t;
	return 0;
}

/* What an alert from the peer most likely means, in terms of our options. */
static const char *alert_hint(const struct net_tls *t, gnutls_alert_description_t alert)
{
	switch (alert) {
	case GNUTLS_A_ILLEGAL_PARAMETER:
	case GNUTLS_A_DECRYPT_ERROR:
		return t->c->psk ? ": the pre-shared keys differ (--psk-file)" : "";
	case GNUTLS_A_HANDSHAKE_FAILURE:
	case GNUTLS_A_INSUFFICIENT_SECURITY:
		return " (do both ends use the same kind of credentials, --psk-file or --tls-creds?)";
	case GNUTLS_A_CERTIFICATE_REQUIRED:
		return ": it wants a certificate signed by its CA (ca-cert.pem), and ours is not";
	case GNUTLS_A_BAD_CERTIFICATE:
	case GNUTLS_A_CERTIFICATE_EXPIRED:
	case GNUTLS_A_UNKNOWN_CA:
	case GNUTLS_A_CERTIFICATE_UNKNOWN:
		return ": it did not accept our certificate (expired, not signed by its CA, or not naming the host "
		       "it connected to?)";
	default:
		return "";
	}
}

/* The same for what GnuTLS found wrong itself. */
static const char *error_hint(const struct net_tls *t, int rc, bool handshake)
{
	if (handshake && t->c->psk && (rc == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || rc == GNUTLS_E_DECRYPTION_FAILED))
		return " (the peer's pre-shared key differs from this one, --psk-file)";
	if (!handshake && rc == GNUTLS_E_DECRYPTION_FAILED)
		return " (the stream was altered in transit)";
	if (rc == GNUTLS_E_NO_CIPHER_SUITES || rc == GNUTLS_E_INSUFFICIENT_CREDENTIALS ||
	    rc == GNUTLS_E_UNKNOWN_CIPHER_SUITE || rc == GNUTLS_E_UNEXPECTED_PACKET)
		return " (do both ends use the same kind of credentials, --psk-file or --tls-creds?)";
	if (rc == GNUTLS_E_CERTIFICATE_REQUIRED || rc == GNUTLS_E_NO_CERTIFICATE_FOUND)
		return " (the peer sent no certificate signed by this end's CA, ca-cert.pem)";
	return "";
}

/* A failed TLS call: -errno where the socket failed, else -EBADMSG with
 * t->why saying what TLS refused. */
static int tls_failed(struct net_tls *t, int rc, const char *during)
{
	if ((rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PUSH_ERROR) && t->sys_errno)
		return -t->sys_errno;
	if (rc == GNUTLS_E_PREMATURE_TERMINATION)
		return -ECONNRESET;
	if (rc == GNUTLS_E_TIMEDOUT)
		return -ETIMEDOUT;
	if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t out = { NULL, 0 };
		unsigned status = gnutls_session_get_verify_cert_status(t->s);
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
			snprintf(t->why, sizeof(t->why), "%s: the peer's certificate was refused: %s", during,
				 (const char *)out.data);
			gnutls_free(out.data);
		} else {
			snprintf(t->why, sizeof(t->why), "%s: the peer's certificate was refused", during);
		}
	} else if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED || rc == GNUTLS_E_WARNING_ALERT_RECEIVED) {
		gnutls_alert_description_t alert = gnutls_alert_get(t->s);
		snprintf(t->why, sizeof(t->why), "%s: the peer refused with the alert \"%s\"%s", during,
			 gnutls_alert_get_name(alert), alert_hint(t, alert));
	} else {
		snprintf(t->why, sizeof(t->why), "%s: %s%s", during, gnutls_strerror(rc),
			 error_hint(t, rc, strcmp(during, "TLS handshake") == 0));
	}
	size_t n = strlen(t->why);
	while (n && (t->why[n - 1] == ' ' || t->why[n - 1] == '\n'))
		t->why[--n] = 0;
	/* Tell the peer why, where TLS has a word for it. */
	(void)gnutls_alert_send_appropriate(t->s, rc);
	return -EBADMSG;
}

static bool is_ip_address(const char *host)
{
	uint8_t buf[16];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int net_tls_client(struct net_tls **out, int fd, const struct net_tls_creds *c, const char *hostname,
		   int timeout_ms)
{
	struct net_tls *t;
	int rc = session_new(&t, fd, c, GNUTLS_CLIENT);
	if (rc < 0)
		return rc;
	if (!c->psk) {
		gnutls_session_set_verify_cert(t->s, hostname, 0);
		if (hostname && !is_ip_address(hostname))
			gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
	}
	gnutls_handshake_set_timeout(t->s, timeout_ms > 0 ? (unsigned)timeout_ms : GNUTLS_INDEFINITE_TIMEOUT);
	do
		rc = gnutls_handshake(t->s);
	while (rc < 0 && !gnutls_error_is_fatal(rc));
	if (rc < 0) {
		rc = tls_failed(t, rc, "TLS handshake");
		*out = t; /* for net_tls_why; the caller frees */
		return rc;
	}
	*out = t;
	return 0;
}

int net_tls_server(struct net_tls **out, int fd, const struct net_tls_creds *c, const uint8_t *read, size_t n_read)
{
	struct net_tls *t;
	int rc = session_new(&t, fd, c, GNUTLS_SERVER | GNUTLS_NONBLOCK);
	if (rc < 0)
		return rc;
	memcpy(t->rbuf, read, n_read);
	t->rfill = (uint32_t)n_read;
	if (!c->psk) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(t->s, NULL, 0);
	}
	*out = t;
	return 0;
}

int net_tls_step(struct net_tls *t, short *events)
{
	int rc = gnutls_handshake(t->s);
	if (rc == 0)
		return 0;
	if (!gnutls_error_is_fatal(rc)) {
		*events = gnutls_record_get_direction(t->s) ? POLLOUT : POLLIN;
		return 1;
	}
	return tls_failed(t, rc, "TLS handshake");
}

int net_tls_send(struct net_tls *t, const void *buf, size_t len)
{
	return net_tls_send_more(t, buf, len, false);
}

int net_tls_send_more(struct net_tls *t, const void *buf, size_t len, bool more)
{
	const uint8_t *p = buf;
	while (len) {
		/* Every record but the last of a batch goes out with MSG_MORE:
		 * TCP fills segments instead of pushing each record. */
		t->more = more || len > NET_TLS_RECORD_MAX;
		t->sys_errno = 0;
		ssize_t n = gnutls_record_send(t->s, p, len);
		if (n == GNUTLS_E_AGAIN && t->sys_errno == 0)
			continue; /* a short write: send the rest, which fails with the reason if any */
		if (n == GNUTLS_E_AGAIN)
			return -t->sys_errno; /* the send timeout passed */
		if (n < 0)
			return tls_failed(t, (int)n, "TLS");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t net_tls_recv(struct net_tls *t, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = gnutls_record_recv(t->s, buf, len);
		if (n >= 0)
			return n;
		if (n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n == GNUTLS_E_AGAIN)
			return -EAGAIN;
		return tls_failed(t, (int)n, "TLS");
	}
}

bool net_tls_buffered(const struct net_tls *t)
{
	return t->rstart < t->rfill || gnutls_record_check_pending(t->s) > 0;
}

bool net_tls_failed(const struct net_tls *t)
{
	return t && t->why[0];
}

const char *net_tls_why(const struct net_tls *t)
{
	return t && t->why[0] ? t->why : "TLS failed";
}

const char *net_tls_description(struct net_tls *t, char *buf, size_t len)
{
	char *d = gnutls_session_get_desc(t->s);
	snprintf(buf, len, "%s", d ? d : "TLS");
	gnutls_free(d);
	return buf;
}

void net_tls_free(struct net_tls *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	explicit_bzero(t->rbuf, sizeof(t->rbuf));
	free(t);
}
