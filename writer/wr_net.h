/* The writer's network side: the main channel and N data channels to a
 * pageferry receiver.  With TLS (net/net_tls.h), packets are protected
 * into records from where they lie, small pieces gathered so that records
 * are full.  Without it (--insecure, loopback), they go with sendmsg
 * (MSG_ZEROCOPY where the kernel allows) or sendfile, completions reaped
 * from each socket's error queue.
 *
 * Nothing handed to the kernel with MSG_ZEROCOPY is reused before its
 * completion: packet headers live in a per-channel slab slot until then, and
 * worker arena buffers go back to their worker only then. */
#ifndef PF_WR_NET_H
#define PF_WR_NET_H

#include <poll.h>
#include <stdbool.h>
#include <sys/uio.h>
#include <stdint.h>

#include "net/net_channel.h"
#include "protocol/proto_packet.h"

#define WR_NET_INFLIGHT 512u	/* packets in flight per channel (power of two) */
#define WR_NET_BATCH 64u	/* packets gathered into one sendmsg */
#define WR_NET_BATCH_BYTES (1u << 20)
#define WR_NET_IOV 1024u	/* iovecs in one sendmsg (the kernel's UIO_MAXIOV) */
#define WR_NET_SLOT_BYTES (PROTO_PACKET_HEADER_SIZE + PROTO_SPARSE_BITMAP_MAX)
/* Guest pieces at least this long go by sendfile (wr_net_file_piece).  A
 * shorter one costs less copied inside the gathered sendmsg than as a call
 * of its own that also ends the TCP segment (mixed guest: 16 KiB made it 0.25 s slower per 4 GiB).
 * The front end's summary quotes it (pf_abi.SENDFILE_MIN_BYTES). */
#define WR_SENDFILE_MIN (64u << 10)

/* How raw guest pages reach the socket (doc/architecture.md, "Sending pages"):
 * OFF copies them in sendmsg; ON is MSG_ZEROCOPY; SENDFILE splices them from
 * the guest file; AUTO takes SENDFILE where the guest file can be spliced,
 * else MSG_ZEROCOPY where the kernel allows it, else copies. */
enum wr_zerocopy { WR_ZC_OFF, WR_ZC_AUTO, WR_ZC_ON, WR_ZC_SENDFILE };

/* The guest file as the writer holds it: its fd, for sendfile.  The writer
 * does not map the guest (the workers read the pages into their arenas);
 * with sendfile, wr_net_open reserves an inaccessible address range as
 * long as the guest (base) so that a piece of the guest file can travel
 * among the iovecs: the address base + off names the file's bytes at off,
 * and only sendfile ever reads them. */
struct wr_guest {
	int fd;
	const uint8_t *base;
	uint64_t bytes;
};

typedef void (*wr_buffer_done_fn)(void *ctx, uint32_t worker, uint32_t buffer);

struct wr_inflight {
	uint64_t need_done;	/* done once this many notifications arrived */
	int32_t worker;		/* arena buffer to give back, or -1 */
	uint32_t buffer;
};

struct wr_tls_sender;

struct wr_channel {
	struct net_conn conn;
	struct wr_tls_sender *sender; /* TLS: the thread that protects and sends */
	bool zerocopy;
	uint64_t seq;		/* DATA packets sent */
	uint64_t pages, payload_bytes;
	uint32_t crc_of_crcs;
	uint64_t zc_issued, zc_done, zc_copied;
	uint64_t sendfile_bytes;
	/* Packet slots: [tail, queued) sent and awaiting completion,
	 * [queued, head) gathered for the next sendmsg. */
	uint64_t head, queued, tail;
	uint64_t queued_bytes;
	uint32_t n_iov;
	struct iovec iov[WR_NET_IOV];
	struct wr_inflight inflight[WR_NET_INFLIGHT];
	/* Each packet's header and what follows it that we build (a sparse
	 * bitmap): kept until the send completes. */
	uint8_t headers[WR_NET_INFLIGHT][WR_NET_SLOT_BYTES];
};

struct wr_net {
	struct net_conn main;
	uint32_t n_channels, next;
	struct proto_handshake hs;
	bool zerocopy;		/* SO_ZEROCOPY is on for the data channels */
	bool sendfile;		/* guest pages go by sendfile from guest.fd */
	struct wr_guest guest;
	wr_buffer_done_fn buffer_done;
	void *ctx;
	struct wr_channel *ch;	/* n_channels of them */
	char peer[128];		/* HOST:PORT as the user wrote it, for messages */
	int io_timeout_ms;	/* --io-timeout: the most any wait for the peer may last */
	bool tls;
	int tls_wake[2];	/* TLS: senders say a batch is done on [1] */
};

/* Connect the main channel and `hs->n_channels` data channels to `hostport`,
 * run TLS's handshake on each (when creds is not NULL), then ours.  On failure returns -errno or a positive
 * enum proto_err, with `what` describing the step (and the receiver's reason
 * when it refused). */
int wr_net_open(struct wr_net *n, const char *hostport, const struct proto_handshake *hs,
		const struct net_tls_creds *creds, enum wr_zerocopy zc, const struct wr_guest *guest,
		int connect_timeout_ms, int io_timeout_ms, char *what, size_t what_len);
/* A failure in words: TLS's own reason for -EBADMSG (from whichever
 * connection it happened on), else strerror. */
const char *wr_net_why(const struct wr_net *n, int neg_errno);
/* Whether a failed send or wait (neg_errno) means the link is dead: the
 * kernel said so, or a connection heard nothing for --io-timeout. */
bool wr_net_link_dead(const struct wr_net *n, int neg_errno);
/* Queue one packet on the next channel: header built from `p` (seq filled
 * in here) plus payload.  Packets are gathered, up to WR_NET_BATCH or 1 MiB
 * per channel, into one sendmsg.  worker >= 0 names the arena buffer holding
 * the payload, given back through buffer_done once the kernel is done with
 * it.  -errno on failure. */
int wr_net_send(struct wr_net *n, struct proto_packet *p, const void *payload, int32_t worker, uint32_t buffer);
/* The same with the payload in pieces: `prefix_len` (<= PROTO_SPARSE_BITMAP_MAX)
 * bytes copied into the packet's slot, then `n_iov` (<= WR_NET_IOV - 2)
 * pieces of guest memory or of arena buffer (worker, buffer) when
 * worker >= 0.  p->payload_len covers them all. */
int wr_net_send_iov(struct wr_net *n, struct proto_packet *p, const void *prefix, uint32_t prefix_len,
		    const struct iovec *iov, uint32_t n_iov, int32_t worker, uint32_t buffer);
/* With sendfile on, an iovec naming `len` bytes of the guest file at `off`
 * (sent by sendfile); NULL without sendfile or below WR_SENDFILE_MIN: send
 * the bytes from memory instead. */
const void *wr_net_file_piece(const struct wr_net *n, uint64_t off, uint64_t len);
/* SYNC(round) on every channel, after everything queued before it. */
int wr_net_sync(struct wr_net *n, uint32_t round);
/* Tell the receiver, on the main channel, that we give up (best effort). */
void wr_net_cancel(struct wr_net *n);
/* Send everything gathered so far (before going idle). */
int wr_net_flush(struct wr_net *n);
/* Give back buffers whose sends completed, without waiting. */
int wr_net_reap(struct wr_net *n);
/* Within the writer's network side (writer/wr_net_reap.c): read channel
 * c's completions (wait: until at least one arrives), and give back the
 * buffers of packets that are done. */
int wr_net_reap_channel(struct wr_net *n, struct wr_channel *c, bool wait);
void wr_net_sweep_completed(struct wr_net *n, struct wr_channel *c);
/* Fill pfd with the channels that wait for completions (POLLERR wakes a
 * poll when one arrives); returns how many. */
unsigned wr_net_pollfds(const struct wr_net *n, struct pollfd *pfd, unsigned max);
/* END on every channel, wait for all completions, then the receiver's RESULT
 * on the main channel: PROTO_OK means "prepared" (every check passed, the
 * data is durable, nothing is committed yet).  *status: PROTO_OK or the
 * receiver's failure. */
int wr_net_finish(struct wr_net *n, uint32_t *status);
/* The second phase (doc/architecture.md, "The handoff"): our RESULT, OK to
 * commit or CANCELLED to abort (0 or -errno); after a commit,
 * wr_net_committed waits for the receiver's RESULT once its copy is
 * committed, and returns as wr_net_finish. */
int wr_net_commit(struct wr_net *n, bool commit);
int wr_net_committed(struct wr_net *n, uint32_t *status);
/* After a failed send: the reason a receiver that gave up sent on the main
 * channel before it closed (its RESULT), if it arrives within wait_ms.
 * 0 and *status, or < 0. */
int wr_net_why_refused(struct wr_net *n, int wait_ms, uint32_t *status);
uint64_t wr_net_zc_sends(const struct wr_net *n);
uint64_t wr_net_zc_copied(const struct wr_net *n);
uint64_t wr_net_sendfile_bytes(const struct wr_net *n);

#endif
