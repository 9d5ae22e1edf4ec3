/* One thread per data channel that protects and sends its batches when the
 * channel runs inside TLS.  Encrypting is the costliest step of a TLS
 * migration (a core for every 1-2 GB/s); the writer's loop only gathers
 * packets, as the receiver reads each channel on a thread of its own.
 *
 * A channel has at most one batch in flight: the writer gathers the next
 * while the thread sends the last, and hands it over once that one is done.
 * A batch counts as done like a zerocopy notification (writer/wr_net.c
 * gives its buffers back then).  The thread is started before lock-down and
 * needs sendmsg (through net/net_tls.c), futex and a write to the wake pipe
 * after it. */
#ifndef PF_WR_TLS_SEND_H
#define PF_WR_TLS_SEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "net/net_tls.h"

struct wr_tls_sender;

/* wake_fd: written (one byte, never blocking) each time a batch is done. */
int wr_tls_sender_start(struct wr_tls_sender **out, struct net_tls *tls, int wake_fd);
/* Wait until the last batch is done: 0, or how sending failed (-errno;
 * -EBADMSG: TLS).  After a failure every later call returns it. */
int wr_tls_sender_wait(struct wr_tls_sender *s);
/* The same without waiting: a failure of a finished batch, else 0. */
int wr_tls_sender_check(struct wr_tls_sender *s);
/* Hand over a batch (the iovecs are copied; what they point to must stay
 * until done).  Only after wr_tls_sender_wait returned 0. */
void wr_tls_sender_post(struct wr_tls_sender *s, const struct iovec *iov, size_t n_iov);
/* Batches done so far. */
uint64_t wr_tls_sender_done(struct wr_tls_sender *s);

#endif
