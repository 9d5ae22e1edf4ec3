#include "net/net_conn.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net_socket.h"

int net_conn_send_all(struct net_conn *c, const void *buf, size_t len)
{
	return c->tls ? net_tls_send(c->tls, buf, len) : net_send_all(c->fd, buf, len);
}

ssize_t net_conn_recv(struct net_conn *c, void *buf, size_t len)
{
	if (c->tls) {
		ssize_t n = net_tls_recv(c->tls, buf, len);
		return n == -ECONNRESET ? 0 : n; /* closed without TLS's close: closed */
	}
	ssize_t n;
	do
		n = recv(c->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

int net_conn_recv_all(struct net_conn *c, void *buf, size_t len)
{
	if (!c->tls)
		return net_recv_all(c->fd, buf, len);
	uint8_t *p = buf;
	while (len) {
		ssize_t n = net_conn_recv(c, p, len);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

bool net_conn_buffered(const struct net_conn *c)
{
	return c->tls && net_tls_buffered(c->tls);
}

const char *net_conn_why(const struct net_conn *c, int neg_errno)
{
	if (neg_errno == -EBADMSG && c->tls)
		return net_tls_why(c->tls);
	return strerror(-neg_errno);
}

void net_conn_close(struct net_conn *c)
{
	net_tls_free(c->tls);
	c->tls = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}
