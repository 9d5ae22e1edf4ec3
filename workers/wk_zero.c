#include "workers/wk_zero.h"

#include <stdint.h>

typedef uint64_t vec256 __attribute__((vector_size(32)));

/* Most non-zero pages are non-zero in their first bytes, so check a cache
 * line first (early exit), then OR 256-byte blocks together and test once per
 * block: the loop is memory-bound, and a test per word would not be.
 * Compiled for AVX2 where the CPU has it (dispatched below). */
#define ZERO_SCAN_BODY                                                       \
	const vec256 *v = p;                                                 \
	vec256 head = v[0] | v[1];                                           \
	if (head[0] | head[1] | head[2] | head[3])                           \
		return false;                                                \
	for (size_t i = 0; i < len / 32; i += 8) {                           \
		vec256 acc = (v[i] | v[i + 1]) | (v[i + 2] | v[i + 3]) |      \
			     (v[i + 4] | v[i + 5]) | (v[i + 6] | v[i + 7]);   \
		if (acc[0] | acc[1] | acc[2] | acc[3])                       \
			return false;                                        \
	}                                                                    \
	return true;

__attribute__((target("avx2"))) static bool zero_avx2(const void *p, size_t len)
{
	ZERO_SCAN_BODY
}

static bool zero_generic(const void *p, size_t len)
{
	ZERO_SCAN_BODY
}

bool wk_page_is_zero(const void *p, size_t len)
{
	static int have_avx2 = -1;
	if (have_avx2 < 0) {
		__builtin_cpu_init();
		have_avx2 = __builtin_cpu_supports("avx2");
	}
	return have_avx2 ? zero_avx2(p, len) : zero_generic(p, len);
}
