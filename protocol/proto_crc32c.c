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

/* With VPCLMULQDQ (AVX-512), 256 bytes a step: four 512-bit accumulators,
 * each 128-bit lane A folded forward by D bytes as A.lo * x^(8D+31) ^
 * A.hi * x^(8D-33) (mod P; the carry-less product of two reflected
 * operands reads as one 33 bits lower than the exponents it multiplies),
 * which stays congruent to A * x^(8D), onto the data D bytes on.  What is
 * left is one 128-bit value R with reg(message) = reg(R || tail), which the
 * crc32 instruction finishes.  On a 512 KiB buffer in cache 1.6-2x
 * crc_hw's speed, on a random guest's pages 3x (bench/crc_cost.c,
 * doc/benchmarks.md). */
#include <immintrin.h>

static int use_fold;
static __m512i fold_256, fold_64, fold_lanes; /* constants, one per 128-bit lane */
static __m128i fold_16;

/* The two constants that fold a 128-bit lane forward by d bytes: low
 * qword x^(8d+31), high qword x^(8d-33), mod P. */
__attribute__((target("avx512f,vpclmulqdq"))) static __m128i fold_by(uint64_t d)
{
	return _mm_set_epi64x((long long)x2nmodp(8 * d - 33, 0), (long long)x2nmodp(8 * d + 31, 0));
}

__attribute__((target("avx512f,vpclmulqdq"))) static void fold_init(void)
{
	fold_256 = _mm512_broadcast_i32x4(fold_by(256));
	fold_64 = _mm512_broadcast_i32x4(fold_by(64));
	fold_16 = fold_by(16);
	/* Lanes 0, 1 and 2 of the last accumulator move 48, 32 and 16 bytes on
	 * to lane 3, which takes them as they are (its constants are zero). */
	fold_lanes = _mm512_inserti32x4(_mm512_setzero_si512(), fold_by(48), 0);
	fold_lanes = _mm512_inserti32x4(fold_lanes, fold_by(32), 1);
	fold_lanes = _mm512_inserti32x4(fold_lanes, fold_by(16), 2);
}

__attribute__((target("avx512f,vpclmulqdq"))) static inline __m512i fold512(__m512i a, __m512i k, __m512i b)
{
	__m512i lo = _mm512_clmulepi64_epi128(a, k, 0x00), hi = _mm512_clmulepi64_epi128(a, k, 0x11);
	return _mm512_ternarylogic_epi64(lo, hi, b, 0x96); /* lo ^ hi ^ b */
}

__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2"))) static uint32_t crc_fold(uint32_t crc, const uint8_t *p,
									      size_t len)
{
	__m512i a0 = _mm512_loadu_si512(p), a1 = _mm512_loadu_si512(p + 64);
	__m512i a2 = _mm512_loadu_si512(p + 128), a3 = _mm512_loadu_si512(p + 192);
	a0 = _mm512_xor_si512(a0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)crc)));
	p += 256;
	len -= 256;
	for (; len >= 256; p += 256, len -= 256) {
		a0 = fold512(a0, fold_256, _mm512_loadu_si512(p));
		a1 = fold512(a1, fold_256, _mm512_loadu_si512(p + 64));
		a2 = fold512(a2, fold_256, _mm512_loadu_si512(p + 128));
		a3 = fold512(a3, fold_256, _mm512_loadu_si512(p + 192));
	}
	a1 = fold512(a0, fold_64, a1);
	a2 = fold512(a1, fold_64, a2);
	a3 = fold512(a2, fold_64, a3);
	__m512i f = fold512(a3, fold_lanes, _mm512_maskz_mov_epi64(0xc0, a3));
	__m128i r = _mm_xor_si128(_mm_xor_si128(_mm512_extracti32x4_epi32(f, 0), _mm512_extracti32x4_epi32(f, 1)),
				  _mm_xor_si128(_mm512_extracti32x4_epi32(f, 2), _mm512_extracti32x4_epi32(f, 3)));
	for (; len >= 16; p += 16, len -= 16) {
		__m128i lo = _mm_clmulepi64_si128(r, fold_16, 0x00), hi = _mm_clmulepi64_si128(r, fold_16, 0x11);
		r = _mm_xor_si128(_mm_xor_si128(lo, hi), _mm_loadu_si128((const __m128i *)p));
	}
	uint64_t c = __builtin_ia32_crc32di(0, (uint64_t)_mm_cvtsi128_si64(r));
	c = __builtin_ia32_crc32di(c, (uint64_t)_mm_extract_epi64(r, 1));
	return crc_hw((uint32_t)c, p, len);
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
		use_fold = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") &&
			   __builtin_cpu_supports("pclmul");
		if (use_fold)
			fold_init();
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

const char *proto_crc32c_method(void)
{
#if defined(__x86_64__)
	if (use_fold)
		return "vpclmulqdq";
	if (use_hw)
		return "sse4.2";
#endif
	return "table";
}

uint32_t proto_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (use_fold && len >= 256)
		return ~crc_fold(crc, buf, len);
	if (use_hw)
		return ~crc_hw(crc, buf, len);
#endif
	return ~crc_sw(crc, buf, len);
}
