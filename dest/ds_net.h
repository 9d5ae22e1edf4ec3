/* Receiving a migration: accept and check the channels, then read packets
 * from all of them, one thread per channel, placing raw pages straight into
 * the destination file and handing zstd payloads to the inflater
 * processes (dest/ds_inflaters.h).  Every header field is checked against
 * the negotiated geometry before use. */
#ifndef PF_DS_NET_H
#define PF_DS_NET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/net_channel.h"
#include "dest/ds_inflaters.h"
#include "dest/ds_inplace.h"
#include "dest/ds_place.h"
#include "dest/ds_suspect.h"
#include "protocol/proto_packet.h"
#include "shm/shm_segment.h"

#define DS_STAGING_BYTES (256u << 10)
#define DS_READAHEAD (16u << 10) /* staged by one recv when a header is needed */

struct ds_channel {
	struct net_conn conn;
	bool ended;
	bool synced;		/* reached the end of the current round */
	uint32_t round;
	/* Bytes received ahead: many small packets per recv.  [start, fill). */
	uint8_t *staging;
	uint32_t start, fill;
	uint8_t *payload;	/* a run's bytes: a RAW or SPARSE payload's pages, checked before written */
	uint64_t seq, pages, payload_bytes;
	uint32_t crc_of_crcs;
};

struct ds_net {
	int listen_fd;
	struct net_conn main;
	struct proto_handshake hs;	/* the session, as agreed on the main channel */
	struct proto_geometry geo;
	uint32_t n_channels;
	_Atomic uint32_t n_ended;
	/* One receiving thread per data channel, so that checking and
	 * writing pages runs on as many cores. */
	pthread_t threads[PROTO_MAX_CHANNELS];
	pthread_barrier_t registered, start, round_end;
	pthread_mutex_t main_lock;	/* one failure message on the main channel */
	int done_pipe[2];		/* the last thread to end wakes the main thread */
	int io_timeout_ms;		/* --io-timeout (0: none) */
	char peer[128];		/* the main channel's peer, HOST:PORT, for messages */
	struct ds_channel ch[PROTO_MAX_CHANNELS];
	struct ds_inflaters inflaters;	/* zstd frames go to them (dest/ds_inflaters.h) */
	struct ds_place place;	/* the destination file */
	const struct ds_inplace *inplace; /* receiving into an existing file, or NULL */
	bool want_state;		/* receive --qmp: the sender must send a device state */
	struct ds_suspect suspect;	/* live migrations: checksum mismatches */
	struct shm_stats *stats;
};

/* Listen, accept the main channel and every data channel, each through TLS
 * (creds not NULL) and its handshake (dest/ds_session.c); connections that
 * fail are closed and logged, and do not end the receive.  Dies with a
 * message when the real sender cannot be served.  r->io_timeout_ms must be
 * set before. */
void ds_net_accept_session(struct ds_net *r, const char *listen_addr, const struct net_tls_creds *creds,
			   int accept_timeout_ms);
/* receive --qmp: the device state that follows the main handshake, read
 * and checked, written to out_fd (then closed).  Before lock-down. */
void ds_net_receive_state(struct ds_net *r, int out_fd);
/* How long a connection may stay silent: a little longer than --io-timeout,
 * so that on a dead link the kernel's verdict comes first. */
int ds_net_silence_ms(const struct ds_net *r);
/* Start the receiving threads (before lock-down), and return once each is
 * registered with RCU (dest/ds_live.h); they wait for ds_net_receive. */
void ds_net_start_threads(struct ds_net *r);
/* Let the threads read packets until every channel's END has been checked,
 * watching the main channel and the front end's notices (dest/ds_commit.h)
 * meanwhile; finish the inflaters; tell the sender
 * the copy is prepared and, on its commit, hand the main channel to the
 * front end (dest/ds_commit.h). */
void ds_net_receive(struct ds_net *r);

#endif
