/* libFuzzer target for the run record (workers/wk_record.h): what the writer
 * reads out of a worker's arena, which a compromised worker controls.
 * Beyond "no crash" it checks what the sinks rely on: fingerprint chunks
 * inside the run, RAW one extent, ZSTD none, SPARSE a bitmap whose runs of
 * set bits are exactly the record's extents, some pages but not all.
 *
 * Input: encoding (1 byte), first page (2), n_pages - 1 (2), then the record.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/proto_bytes.h"
#include "workers/wk_record.h"

#define CHECK(cond)            \
	do {                   \
		if (!(cond))   \
			abort(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t shared[WK_RECORD_BYTES], copy[WK_RECORD_BYTES];
	if (size < 5)
		return 0;
	uint8_t encoding = data[0] & 3;
	uint64_t first = get_le16(data + 1);
	uint32_t n = get_le16(data + 3) % WK_RECORD_MAX_PAGES + 1;
	uint32_t fp_chunk_pages = 512; /* 2 MiB of 4 KiB pages */
	size -= 5;
	memset(shared, 0, sizeof(shared));
	memcpy(shared, data + 5, size < sizeof(shared) ? size : sizeof(shared));
	struct wk_record r;
	if (!wk_record_read(shared, encoding, first, n, fp_chunk_pages, copy, &r))
		return 0;
	for (uint32_t k = 0; k < r.n_fp; k++) {
		struct wk_fp f = wk_record_fp(&r, k);
		CHECK(f.chunk >= first / fp_chunk_pages && f.chunk <= (first + n - 1) / fp_chunk_pages);
	}
	if (encoding == 1)
		CHECK(r.n_extents == 1 && !r.bitmap);
	else if (encoding == 2)
		CHECK(r.n_extents == 0 && !r.bitmap);
	else {
		CHECK(encoding == 3 && r.bitmap);
		uint32_t k = 0, start, len, extents = 0, present = 0;
		while (wk_record_next_extent(r.bitmap, n, &k, &start, &len)) {
			CHECK(len >= 1 && start + len <= n);
			extents++;
			present += len;
		}
		CHECK(extents == r.n_extents && present > 0 && present < n);
	}
	return 0;
}
