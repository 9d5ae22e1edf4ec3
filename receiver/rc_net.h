/* Receiving a migration: accept and check the channels, then read packets
 * from all of them, placing raw pages straight into the destination mapping
 * and handing zstd payloads to the inflater processes.  Every header field
 * is checked against the negotiated geometry before use. */
#ifndef PF_RC_NET_H
#define PF_RC_NET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/net_channel.h"
#include "receiver/rc_inplace.h"
#include "receiver/rc_suspect.h"
#include "protocol/proto_packet.h"
#include "shm/shm_ring.h"
#include "shm/shm_segment.h"
#include "workers/wk_arena.h"

#define RC_STAGING_BYTES (256u << 10)
#define RC_READAHEAD (16u << 10) /* staged by one recv when a header is needed */

struct rc_channel {
	int fd;
	bool ended;
	bool synced;		/* reached the end of the current round */
	uint32_t round;
	/* Bytes received ahead: many small packets per recv.  [start, fill). */
	uint8_t *staging;
	uint32_t start, fill;
	uint64_t seq, pages, payload_bytes;
	uint32_t crc_of_crcs;
};

struct rc_inflater {
	struct shm_ring out, back;
	uint8_t *arena;
	uint32_t free_buffers[WK_ARENA_BUFFERS], n_free;
	bool is_free[WK_ARENA_BUFFERS];
};

struct rc_net {
	int listen_fd, main_fd;
	struct proto_handshake hs;	/* the session, as agreed on the main channel */
	struct proto_geometry geo;
	uint32_t n_channels;
	_Atomic uint32_t n_ended;
	/* One receiving thread per data channel, so that placing pages (and
	 * the page faults of a fresh destination) runs on as many cores. */
	pthread_t threads[PROTO_MAX_CHANNELS];
	pthread_barrier_t start, round_end;
	pthread_mutex_t inflater_lock;	/* the inflater rings have one producer at a time */
	pthread_mutex_t main_lock;	/* one failure message on the main channel */
	int done_pipe[2];		/* the last thread to end wakes the main thread */
	int io_timeout_ms;		/* --io-timeout (0: none) */
	char peer[128];		/* the main channel's peer, HOST:PORT, for messages */
	struct rc_channel ch[PROTO_MAX_CHANNELS];
	uint32_t n_inflaters, next_inflater;
	struct rc_inflater inf[SHM_MAX_WORKERS];
	uint8_t *dest;
	const struct rc_inplace *inplace; /* receiving into an existing file, or NULL */
	struct rc_suspect suspect;	/* live migrations: checksum mismatches */
	struct shm_stats *stats;
};

/* Listen, accept the main channel and every data channel, check and answer
 * each handshake (receiver/rc_session.c).  Dies with a message on any
 * failure.  r->io_timeout_ms must be set before. */
void rc_net_accept_session(struct rc_net *r, const char *listen_addr, const struct net_psk *psk,
			   int accept_timeout_ms);
/* How long a connection may stay silent: a little longer than --io-timeout,
 * so that on a dead link the kernel's verdict comes first. */
int rc_net_silence_ms(const struct rc_net *r);
/* Start the receiving threads (before lock-down); they wait for
 * rc_net_receive. */
void rc_net_start_threads(struct rc_net *r);
/* Let the threads read packets until every channel's END has been checked,
 * watching the main channel meanwhile; finish the inflaters; tell the sender
 * the copy is prepared and, on its commit, hand the main channel to the
 * front end (receiver/rc_commit.h). */
void rc_net_receive(struct rc_net *r);

#endif
