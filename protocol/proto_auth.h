/* Pre-shared-key challenge-response, run on every channel right after the
 * handshake when both ends set PROTO_F_PSK:
 *
 *   receiver -> sender   nonce_r (32 random bytes)
 *   sender -> receiver   nonce_s (32) | proof('S')
 *   receiver -> sender   status (u32 LE: 0, or PROTO_E_PSK) | proof('R')
 *
 * proof(role) = HMAC-SHA256(psk, "pageferry-psk-v1" | role | session_id |
 *                           channel_kind | channel_id | nonce_r | nonce_s)
 *
 * Each end proves it holds the key over fresh nonces from both ends, bound to
 * this session and channel, so a recorded exchange cannot be replayed and a
 * proof cannot be reflected back (the role byte differs).  When the receiver
 * refuses, its proof is all zeros.
 */
#ifndef PF_PROTO_AUTH_H
#define PF_PROTO_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_sha256.h"

#define PROTO_NONCE_SIZE 32u
#define PROTO_PSK_MIN 16u
#define PROTO_PSK_MAX 1024u
#define PROTO_AUTH_SENDER_MSG (PROTO_NONCE_SIZE + PROTO_SHA256_SIZE)
#define PROTO_AUTH_REPLY_MSG (4u + PROTO_SHA256_SIZE)

enum proto_auth_role { PROTO_AUTH_SENDER = 'S', PROTO_AUTH_RECEIVER = 'R' };

void proto_auth_proof(const uint8_t *psk, size_t psk_len, enum proto_auth_role role,
		      const uint8_t session_id[16], uint8_t channel_kind, uint8_t channel_id,
		      const uint8_t nonce_r[PROTO_NONCE_SIZE], const uint8_t nonce_s[PROTO_NONCE_SIZE],
		      uint8_t out[PROTO_SHA256_SIZE]);

#endif
