/* SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), for the pre-shared-key
 * challenge-response only.  In-tree because the project's dependencies carry
 * no MAC; checked against the RFC 4231 vectors in tests/test_protocol.c. */
#ifndef PF_PROTO_SHA256_H
#define PF_PROTO_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_SHA256_SIZE 32u

struct proto_sha256 {
	uint32_t h[8];
	uint64_t bytes;
	uint8_t block[64];
	size_t used;
};

void proto_sha256_init(struct proto_sha256 *s);
void proto_sha256_update(struct proto_sha256 *s, const void *data, size_t len);
void proto_sha256_final(struct proto_sha256 *s, uint8_t out[PROTO_SHA256_SIZE]);

struct proto_hmac {
	struct proto_sha256 inner, outer;
};

void proto_hmac_init(struct proto_hmac *m, const uint8_t *key, size_t key_len);
void proto_hmac_update(struct proto_hmac *m, const void *data, size_t len);
void proto_hmac_final(struct proto_hmac *m, uint8_t out[PROTO_SHA256_SIZE]);

/* Constant-time comparison: 1 if equal. */
int proto_mac_equal(const uint8_t *a, const uint8_t *b, size_t len);

#endif
