/* A VMM's device state on the main channel (migrate --qmp, doc/qemu.md):
 * right after the main channel's handshake, when both sides agreed on
 * PROTO_F_DEVICE_STATE, the sender sends this 16-byte header and then
 * `length` bytes of state, inside TLS when TLS is on.
 *
 *    0  4  magic      PROTO_STATE_MAGIC ("PFST")
 *    4  4  length     1..PROTO_SNAP_STATE_MAX bytes
 *    8  4  crc32c     of the state bytes
 *   12  4  reserved   0
 */
#ifndef PF_PROTO_STATE_H
#define PF_PROTO_STATE_H

#include <stdint.h>

#include "protocol/proto_error.h"

#define PROTO_STATE_HEADER_SIZE 16u
#define PROTO_STATE_MAGIC 0x54534650u

struct proto_state_header {
	uint32_t length, crc;
};

void proto_state_header_encode(const struct proto_state_header *h, uint8_t out[PROTO_STATE_HEADER_SIZE]);
/* Every field checked: PROTO_E_MAGIC, PROTO_E_DEVICE_STATE_LEN, PROTO_E_RESERVED. */
enum proto_err proto_state_header_decode(const uint8_t in[PROTO_STATE_HEADER_SIZE], struct proto_state_header *out);

#endif
