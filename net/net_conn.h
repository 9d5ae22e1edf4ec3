/* A connection as the writer and the receiver use it: a TCP socket, with
 * TLS around it when the transfer has credentials (net/net_tls.h), plain
 * only with --insecure or on loopback.  Both read and write whole buffers
 * or fail with -errno (-EBADMSG: TLS refused something; net_conn_why says
 * what). */
#ifndef PF_NET_CONN_H
#define PF_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "net/net_tls.h"

struct net_conn {
	int fd;
	struct net_tls *tls;	/* NULL: plain TCP */
};

/* 0, or -errno; -ECONNRESET when the peer closed first. */
int net_conn_send_all(struct net_conn *c, const void *buf, size_t len);
int net_conn_recv_all(struct net_conn *c, void *buf, size_t len);
/* Up to len bytes: > 0, 0 when the peer closed, or -errno (-EAGAIN: the
 * receive timeout passed, or nothing yet on a non-blocking socket). */
ssize_t net_conn_recv(struct net_conn *c, void *buf, size_t len);
/* Data already read off the socket and not yet returned: poll on the fd
 * would not report it. */
bool net_conn_buffered(const struct net_conn *c);
/* What a failure means, in words: TLS's own for -EBADMSG, else strerror. */
const char *net_conn_why(const struct net_conn *c, int neg_errno);
/* Free the TLS session (wiping its keys) and close the socket. */
void net_conn_close(struct net_conn *c);

#endif
