#include "protocol/proto_crc32c.h"

#include <string.h>

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t table[8][256];
static int use_hw;

/* x^(2^n) mod P for n = 0..30, in the reflected representation (bit 31 is
 * x^0).  x^(2^31) = x^(2^0) for this polynomial, so the table repeats with
 * period 31 (tests/test_protocol.c checks combine against real CRCs). */
static const uint32_t x2n_table[31] = {
	0x40000000, 0x20000000, 0x08000000, 0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18,
	0x510ac59a, 0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a, 0x35d73a62,
	0x28461564, 0xbf455269, 0xe2ea32dc, 0xfe7740e6, 0xf946610b, 0x3c204f8f, 0x538586e3, 0x59726915,
	0x734d5309, 0xbc1ac763, 0x7d0722cc, 0xd289cabe, 0xe94ca9bc, 0x05b74f3f, 0xa51e1f42,
};

/* a * b mod P. */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;
	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
	}
	return p;
}

/* x^(n * 2^k) mod P. */
static uint32_t x2nmodp(uint64_t n, unsigned k)
{
	uint32_t p = 1u << 31; /* x^0 */
	while (n) {
		if (n & 1)
			p = multmodp(x2n_table[k % 31], p);
		n >>= 1;
		k++;
	}
	return p;
}

uint32_t proto_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
	return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

void proto_crc32c_shift_init(struct proto_crc32c_shift *s, uint64_t len_b)
{
	uint32_t op = x2nmodp(len_b, 3);
	for (uint32_t k = 0; k < 4; k++)
		for (uint32_t b = 0; b < 256; b++)
			s->t[k][b] = multmodp(op, b << (8 * k));
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		w ^= crc;
		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
		      table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
		      table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if defined(__x86_64__)
/* The crc32 instruction has a latency of 3 cycles and a throughput of 1:
 * one stream uses a third of it.  Three lanes of LANE bytes run side by
 * side and are joined with fixed shift operators (a page of 4096 bytes is
 * one 4032-byte block plus 64 bytes). */
#define LANE 1344u
static struct proto_crc32c_shift shift_lane, shift_2lane;

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	while (len >= 3 * LANE) {
		uint64_t c1 = 0, c2 = 0;
		for (size_t i = 0; i < LANE; i += 8) {
			uint64_t w0, w1, w2;
			memcpy(&w0, p + i, 8);
			memcpy(&w1, p + LANE + i, 8);
			memcpy(&w2, p + 2 * LANE + i, 8);
			c = __builtin_ia32_crc32di(c, w0);
			c1 = __builtin_ia32_crc32di(c1, w1);
			c2 = __builtin_ia32_crc32di(c2, w2);
		}
		/* The register is linear: reg(A||B, r) = shift_|B|(reg(A, r)) ^ reg(B, 0). */
		c = proto_crc32c_shift_combine(&shift_2lane, (uint32_t)c, 0) ^
		    proto_crc32c_shift_combine(&shift_lane, (uint32_t)c1, 0) ^ (uint32_t)c2;
		p += 3 * LANE;
		len -= 3 * LANE;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}
#endif

/* Before main, so that threads never race on the tables (and a sandboxed
 * stage never builds them after lock-down: nothing here makes a syscall). */
__attribute__((constructor)) static void crc_init(void)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	use_hw = __builtin_cpu_supports("sse4.2");
	if (use_hw) {
		proto_crc32c_shift_init(&shift_lane, LANE);
		proto_crc32c_shift_init(&shift_2lane, 2 * LANE);
		return;
	}
#endif
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (POLY & (0u - (c & 1)));
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t proto_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (use_hw)
		return ~crc_hw(crc, buf, len);
#endif
	return ~crc_sw(crc, buf, len);
}
