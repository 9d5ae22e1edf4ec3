/* Receiving a migration: accept and check the channels, then read packets
 * from all of them, placing raw pages straight into the destination mapping
 * and handing zstd payloads to the inflater processes.  Every header field
 * is checked against the negotiated geometry before use. */
#ifndef PF_RC_NET_H
#define PF_RC_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "net/net_channel.h"
#include "protocol/proto_packet.h"
#include "shm/shm_ring.h"
#include "shm/shm_segment.h"

#define RC_ARENA_BUFFER_SIZE PROTO_MAX_RUN_BYTES

#define RC_STAGING_BYTES (256u << 10)

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
	uint32_t free_buffers[16], n_free;
	bool is_free[16];
};

struct rc_net {
	int listen_fd, main_fd;
	struct proto_handshake hs;	/* the session, as agreed on the main channel */
	struct proto_geometry geo;
	uint32_t n_channels, n_ended, n_synced;
	struct rc_channel ch[PROTO_MAX_CHANNELS];
	uint32_t n_inflaters, next_inflater;
	struct rc_inflater inf[SHM_MAX_WORKERS];
	uint8_t *dest;
	struct shm_stats *stats;
};

/* Listen, accept the main channel and every data channel, check and answer
 * each handshake.  Dies with a message on any failure. */
void rc_net_accept_session(struct rc_net *r, const char *listen_addr, const struct net_psk *psk,
			   int accept_timeout_ms);
/* Read packets until every channel's END has been checked; inflaters
 * finished; then answer RESULT on the main channel. */
void rc_net_receive(struct rc_net *r);

#endif
