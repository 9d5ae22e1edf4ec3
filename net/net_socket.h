/* TCP plumbing for the writer and the receiver: addresses, connect with a
 * deadline, listen/accept, exact sends and receives.  Every call returns
 * -errno (never sets a global) so callers can name what failed. */
#ifndef PF_NET_SOCKET_H
#define PF_NET_SOCKET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128];		/* as the user wrote it, for messages */
};

/* "HOST:PORT" or "[V6]:PORT", numeric or a name.  -EINVAL with *why set. */
int net_resolve(const char *hostport, int passive, struct net_addr *out, const char **why);
/* Connect, retrying "connection refused" until timeout_ms has passed (the
 * receiver may still be starting); a peer that never answers is given up at
 * the same deadline (-ETIMEDOUT).  Returns the fd or -errno.  Connected and
 * accepted sockets have TCP_NODELAY: we never write a small piece that
 * more would follow without saying so (MSG_MORE). */
int net_connect(const struct net_addr *a, int timeout_ms);
int net_listen(const struct net_addr *a);
/* The next connection waiting on a non-blocking listening socket, itself
 * non-blocking, with its peer's address: its fd, or -EAGAIN when none waits. */
int net_accept(int listen_fd, struct net_addr *peer);
/* Whole buffers: 0, or -errno; -ECONNRESET when the peer closed first. */
int net_send_all(int fd, const void *buf, size_t len);
int net_recv_all(int fd, void *buf, size_t len);
/* After a partial sendmsg/recvmsg of `done` bytes: drop the iovecs it
 * finished, trim the first one left. */
void net_iov_advance(struct iovec **iov, size_t *n_iov, size_t done);
/* Bound how long a blocking send/receive may wait (0: forever). */
int net_set_timeout(int fd, int timeout_ms);
/* The progress timeout (--io-timeout) of a connected socket: unacknowledged
 * data (TCP_USER_TIMEOUT) and, on an idle connection, keepalive probes left
 * unanswered end the connection once io_timeout_ms passed without progress;
 * sends and receives block at most that long.  setsockopt is not in any
 * stage's sandbox: call it before lock-down.  0 leaves the socket unbounded. */
int net_set_io_timeout(int fd, int io_timeout_ms);
/* Whether a failed send/receive means the link or the peer's host stopped
 * answering (the kernel's verdict, or a send/receive timeout), as opposed to
 * a peer that closed or reset the connection. */
int net_is_dead_link(int neg_errno);

#endif
