/* The writer's completions: what the kernel (MSG_ZEROCOPY notifications on
 * each data channel's error queue) and the TLS sender threads are done
 * with, and the arena buffers that frees (writer/wr_net.h). */
#include "writer/wr_net.h"

#include <errno.h>
#include <time.h> /* before linux/errqueue.h, which needs struct timespec */
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "writer/wr_tls_send.h"

#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

/* Give back the buffers of sent packets whose notifications all arrived. */
void wr_net_sweep_completed(struct wr_net *n, struct wr_channel *c)
{
	uint64_t done = c->sender ? wr_tls_sender_done(c->sender) : c->zc_done;
	while (c->tail != c->queued && c->inflight[c->tail % WR_NET_INFLIGHT].need_done <= done) {
		struct wr_inflight *f = &c->inflight[c->tail % WR_NET_INFLIGHT];
		if (f->worker >= 0 && n->buffer_done)
			n->buffer_done(n->ctx, (uint32_t)f->worker, f->buffer);
		c->tail++;
	}
}

/* Read completion notifications off the error queue.  wait: block until at
 * least one arrives. */
int wr_net_reap_channel(struct wr_net *n, struct wr_channel *c, bool wait)
{
	if (c->sender) {
		char drain[64];
		while (read(n->tls_wake[0], drain, sizeof(drain)) > 0)
			;
		int rc = wait ? wr_tls_sender_wait(c->sender) : wr_tls_sender_check(c->sender);
		wr_net_sweep_completed(n, c);
		return rc;
	}
	for (;;) {
		char control[128];
		struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };
		ssize_t r = recvmsg(c->conn.fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			if (!wait)
				break;
			/* A completion needs an acknowledgement.  The kernel ends
			 * a connection left unacknowledged for --io-timeout
			 * (TCP_USER_TIMEOUT): take its verdict from SO_ERROR, and
			 * check the age of the last acknowledgement ourselves in
			 * case no verdict comes. */
			struct pollfd p = { .fd = c->conn.fd, .events = 0 };
			int waited = poll(&p, 1, n->io_timeout_ms > 0 ? n->io_timeout_ms : 10000);
			if (waited < 0 && errno != EINTR)
				return -errno;
			int err = 0;
			socklen_t len = sizeof(err);
			if ((p.revents & (POLLERR | POLLHUP)) &&
			    getsockopt(c->conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
				return -err;
			if (p.revents & POLLHUP)
				return -ECONNRESET;
			struct tcp_info ti;
			len = sizeof(ti);
			if (waited == 0 && n->io_timeout_ms > 0 &&
			    getsockopt(c->conn.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
			    ti.tcpi_last_ack_recv >= (uint32_t)n->io_timeout_ms)
				return -ETIMEDOUT;
			continue;
		}
		if (r < 0)
			return -errno;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			struct sock_extended_err serr;
			memcpy(&serr, CMSG_DATA(cm), sizeof(serr));
			if (serr.ee_origin != SO_EE_ORIGIN_ZEROCOPY) {
				if (serr.ee_errno)
					return -(int)serr.ee_errno;
				continue;
			}
			/* ids [ee_info, ee_data], 32-bit and wrapping; TCP completes
			 * them in order, so the range always starts at zc_done. */
			uint32_t count = serr.ee_data - serr.ee_info + 1;
			c->zc_done += count;
			if (serr.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				c->zc_copied += count;
		}
		wait = false;
	}
	wr_net_sweep_completed(n, c);
	return 0;
}

int wr_net_reap(struct wr_net *n)
{
	for (uint32_t i = 0; i < n->n_channels; i++)
		if ((n->ch[i].zerocopy || n->ch[i].sender) && n->ch[i].tail != n->ch[i].queued) {
			int rc = wr_net_reap_channel(n, &n->ch[i], false);
			if (rc < 0)
				return rc;
		}
	return 0;
}
