#include "protocol/proto_auth.h"

static const char label[] = "pageferry-psk-v1";

void proto_auth_proof(const uint8_t *psk, size_t psk_len, enum proto_auth_role role,
		      const uint8_t session_id[16], uint8_t channel_kind, uint8_t channel_id,
		      const uint8_t nonce_r[PROTO_NONCE_SIZE], const uint8_t nonce_s[PROTO_NONCE_SIZE],
		      uint8_t out[PROTO_SHA256_SIZE])
{
	struct proto_hmac m;
	uint8_t fields[3] = { (uint8_t)role, channel_kind, channel_id };
	proto_hmac_init(&m, psk, psk_len);
	proto_hmac_update(&m, label, sizeof(label) - 1);
	proto_hmac_update(&m, fields, 1);
	proto_hmac_update(&m, session_id, 16);
	proto_hmac_update(&m, fields + 1, 2);
	proto_hmac_update(&m, nonce_r, PROTO_NONCE_SIZE);
	proto_hmac_update(&m, nonce_s, PROTO_NONCE_SIZE);
	proto_hmac_final(&m, out);
}
