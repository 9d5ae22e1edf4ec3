#include "net/net_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int net_resolve(const char *hostport, int passive, struct net_addr *out, const char **why)
{
	char host[256];
	const char *port;
	memset(out, 0, sizeof(*out));
	snprintf(out->text, sizeof(out->text), "%s", hostport);
	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (!end || end[1] != ':' || (size_t)(end - hostport - 1) >= sizeof(host))
			goto bad;
		memcpy(host, hostport + 1, (size_t)(end - hostport - 1));
		host[end - hostport - 1] = 0;
		port = end + 2;
	} else {
		const char *colon = strrchr(hostport, ':');
		if (!colon || (size_t)(colon - hostport) >= sizeof(host))
			goto bad;
		memcpy(host, hostport, (size_t)(colon - hostport));
		host[colon - hostport] = 0;
		port = colon + 1;
	}
	if (!*port)
		goto bad;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = passive ? AI_PASSIVE : 0 }, *res;
	int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (rc != 0) {
		*why = gai_strerror(rc);
		return -EINVAL;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	*why = "expected HOST:PORT";
	return -EINVAL;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connect that gets no answer (SYN dropped by a dead link) must not block
 * for the kernel's two minutes of SYN retries: SO_SNDTIMEO bounds connect(2)
 * too (it then fails with EINPROGRESS), TCP_USER_TIMEOUT the retries. */
static int bound_connect(int fd, long long left_ms)
{
	int ms = left_ms < 1000 ? 1000 : left_ms > 3600000 ? 3600000 : (int)left_ms;
	unsigned int user_ms = (unsigned int)ms;
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms)) < 0)
		return -errno;
	return net_set_timeout(fd, ms);
}

/* Every write we make is a whole message or a batch (the writer gathers its
 * packets itself, with MSG_MORE between the pieces of one): Nagle would only
 * hold the small ones back until the peer's delayed acknowledgement, 40 ms
 * on each TLS handshake and each END. */
static int no_delay(int fd)
{
	int one = 1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ? -errno : 0;
}

int net_connect(const struct net_addr *a, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		int err = -bound_connect(fd, deadline - now_ms());
		if (err == 0 && connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0 &&
		    (err = -net_set_timeout(fd, 0)) == 0 && (err = -no_delay(fd)) == 0)
			return fd;
		if (err == 0)
			err = errno == EINPROGRESS ? ETIMEDOUT : errno;
		close(fd);
		if ((err != ECONNREFUSED && err != EINTR) || now_ms() >= deadline)
			return -err;
		struct timespec pause = { 0, 50 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
}

int net_listen(const struct net_addr *a)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 64) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int net_accept(int listen_fd, struct net_addr *peer)
{
	memset(peer, 0, sizeof(*peer));
	peer->len = sizeof(peer->ss);
	int fd = accept4(listen_fd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return -errno;
	int err = no_delay(fd);
	if (err < 0) {
		close(fd);
		return err;
	}
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (peer->ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&peer->ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
	} else if (peer->ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peer->ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
	}
	snprintf(peer->text, sizeof(peer->text), "%s:%d", host, port);
	return fd;
}

int net_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int net_recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, MSG_WAITALL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int net_set_timeout(int fd, int timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

int net_set_io_timeout(int fd, int io_timeout_ms)
{
	int one = 1, secs = (io_timeout_ms + 999) / 1000;
	/* Keepalive probes are what notice a dead peer on a connection that
	 * sends nothing (the receiver's data channels, the sender's main
	 * channel while it waits for the result): the first after half the
	 * timeout, then one every sixth; with TCP_USER_TIMEOUT set the kernel
	 * gives up when the timeout has passed since the peer was last heard. */
	int idle = secs / 2 > 1 ? secs / 2 : 1, intvl = secs / 6 > 1 ? secs / 6 : 1;
	int cnt = (secs - idle) / intvl > 1 ? (secs - idle) / intvl : 1;
	unsigned int user_ms = (unsigned int)io_timeout_ms;
	if (io_timeout_ms <= 0) {
		user_ms = 0;
		if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms)) < 0)
			return -errno;
		return net_set_timeout(fd, 0);
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
		return -errno;
	return net_set_timeout(fd, io_timeout_ms);
}

int net_is_dead_link(int neg_errno)
{
	switch (-neg_errno) {
	case ETIMEDOUT:	  /* TCP_USER_TIMEOUT or keepalive gave up */
	case EAGAIN:	  /* SO_SNDTIMEO / SO_RCVTIMEO */
	case EHOSTUNREACH: /* the kernel's last soft error when it gave up */
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
		return 1;
	default:
		return 0;
	}
}

void net_iov_advance(struct iovec **iov, size_t *n_iov, size_t done)
{
	while (*n_iov && done >= (*iov)->iov_len) {
		done -= (*iov)->iov_len;
		(*iov)++;
		(*n_iov)--;
	}
	if (*n_iov) {
		(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
		(*iov)->iov_len -= done;
	}
}
