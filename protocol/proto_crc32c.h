/* CRC-32C (Castagnoli), the checksum of every header, bitmap, page extent
 * and payload. */
#ifndef PF_PROTO_CRC32C_H
#define PF_PROTO_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0.  Where the CPU has them, 256 bytes
 * or more are folded with VPCLMULQDQ (AVX-512), the rest goes through the
 * SSE4.2 crc32 instruction, three streams interleaved; else byte tables. */
uint32_t proto_crc32c(uint32_t crc, const void *buf, size_t len);

/* Which of those this CPU gets: "vpclmulqdq", "sse4.2" or "table". */
const char *proto_crc32c_method(void);

/* The CRC of A||B from crc(A), crc(B) and the length of B (zlib's
 * crc32_combine: crc(A) times x^(8 len_b) mod P, plus crc(B)).  A few
 * hundred nanoseconds at most; len_b = k * 4096 costs popcount(k) + 1
 * multiplications of 32 steps. */
uint32_t proto_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* The same operator for one fixed length as four byte tables (4 KiB), for
 * hot loops that combine per-page CRCs: about ten instructions a combine. */
struct proto_crc32c_shift {
	uint32_t t[4][256];
};
void proto_crc32c_shift_init(struct proto_crc32c_shift *s, uint64_t len_b);
static inline uint32_t proto_crc32c_shift_combine(const struct proto_crc32c_shift *s, uint32_t crc_a,
						  uint32_t crc_b)
{
	return s->t[0][crc_a & 0xff] ^ s->t[1][(crc_a >> 8) & 0xff] ^ s->t[2][(crc_a >> 16) & 0xff] ^
	       s->t[3][crc_a >> 24] ^ crc_b;
}

#endif
