/* Channel handshake: the first 64 bytes on every connection, each way.
 *
 *  off size field
 *    0  4   magic        "PFHS" (0x53484650 little-endian)
 *    4  2   version      PROTO_VERSION
 *    6  1   channel_kind 0 main, 1 data
 *    7  1   channel_id   data channel index (0 for main)
 *    8 16   session_id   random per transfer; both ends must agree
 *   24  4   page_size
 *   28  4   max_run_pages
 *   32  8   guest_pages
 *   40  2   n_channels   data channels in this session
 *   42  2   status       in the receiver's reply: 0 accepted, otherwise the
 *                        enum proto_err saying why it refuses; 0 from senders
 *   44  4   features     PROTO_F_* bits
 *   48 12   reserved     0
 *   60  4   crc32c of bytes 0..59
 */
#ifndef PF_PROTO_HANDSHAKE_H
#define PF_PROTO_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_error.h"
#include "protocol/proto_geometry.h"

/* 5: ZSTD_SPARSE packets (a bitmap, then a frame of the data pages only).
 * 4: channels run inside TLS (or plainly, with --insecure); the in-band
 * PSK challenge of version 3 is gone.  3: DATA packets carry their
 * payload's CRC-32C; END and RESULT bodies their own.  2: SPARSE packets. */
#define PROTO_VERSION 5u
#define PROTO_HANDSHAKE_MAGIC 0x53484650u
#define PROTO_HANDSHAKE_SIZE 64u

enum proto_channel_kind { PROTO_CHAN_MAIN = 0, PROTO_CHAN_DATA = 1 };

enum proto_feature {
	PROTO_F_ZSTD = 1u << 0,	/* packets may be zstd-encoded */
	/* 1u << 1 was version 3's in-band PSK challenge: never set now */
	PROTO_F_ROUNDS = 1u << 2,	/* live migration: several rounds */
	PROTO_F_DEVICE_STATE = 1u << 3,	/* a VMM's device state follows the main handshake (protocol/proto_state.h) */
};
#define PROTO_F_KNOWN (PROTO_F_ZSTD | PROTO_F_ROUNDS | PROTO_F_DEVICE_STATE)

struct proto_handshake {
	uint8_t channel_kind;
	uint8_t channel_id;
	uint8_t session_id[16];
	struct proto_geometry geo;
	uint16_t n_channels;
	uint32_t features;
	uint16_t status;	/* enum proto_err; PROTO_OK = accepted */
	uint16_t version;	/* as decoded (PROTO_VERSION once accepted) */
};

void proto_handshake_encode(const struct proto_handshake *h, uint8_t out[PROTO_HANDSHAKE_SIZE]);
/* Structural checks only (magic, version, checksum, ranges).  On
 * PROTO_E_VERSION only out->version is set: the version the peer speaks. */
enum proto_err proto_handshake_decode(const uint8_t *buf, size_t len, struct proto_handshake *out);
/* A decoded peer handshake against what we expect for this session. */
enum proto_err proto_handshake_match(const struct proto_handshake *peer,
				     const struct proto_handshake *ours);

#endif
