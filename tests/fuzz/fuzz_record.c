/* libFuzzer target for what a compromised stage hands the next through
 * shared memory: a 16-byte ring descriptor (protocol/proto_desc.h), decoded
 * by every stage that takes one, and for a worker's RUN the run record in
 * its arena buffer (workers/wk_record.h), decoded by the writer
 * (writer/writer_main.c: proto_desc_unpack, then wk_record_read).
 *
 * Input: the slot (w0, w1 little-endian), then the record.  The geometry is
 * a 4 KiB-page guest of 4 GiB with 1024-page runs (the largest a 4 KiB
 * geometry allows), WK_ARENA_BUFFERS buffers.  No checksum guards either:
 * seeds are not needed to get past one.
 *
 * Invariants checked beyond "no crash":
 * - every consumer accepts a slot exactly when a model of proto_desc.h's
 *   rules, written out here, does; next to every slot it accepts, each
 *   field at the edge of its rule is tried as well;
 * - the writer accepts a record exactly when a model of wk_record.h's
 *   rules, written out here, does; next to every run descriptor, records
 *   at the edges of those rules are tried as well;
 * - a decoded descriptor of a type that names pages names 1..max_run_pages
 *   pages inside guest RAM; one that names an arena buffer names one that
 *   exists; ZERO runs carry no length, ZSTD a frame shorter than its pages;
 *   packing it again gives back the slot;
 * - a ZSTD frame's trailing CRC is read only when it fits its buffer;
 * - an accepted record has fingerprint chunks inside the run, RAW one
 *   extent, ZSTD none, SPARSE a bitmap whose runs of set bits are exactly
 *   the record's extents, some pages but not all. */
#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_desc.h"
#include "tests/fuzz/fuzz.h"
#include "workers/wk_arena.h"
#include "workers/wk_record.h"

static const struct proto_geometry geo = { .page_size = 4096, .max_run_pages = 1024, .guest_pages = 1u << 20 };
#define FP_CHUNK_PAGES 512u /* 2 MiB of 4 KiB pages (shm_fp_chunk_pages) */

static void check_desc(struct shm_slot slot, const struct proto_desc *d)
{
	struct shm_slot again = proto_desc_pack(d);
	CHECK(again.w0 == slot.w0 && again.w1 == slot.w1);
	if (d->type == PROTO_DESC_RUN || d->type == PROTO_DESC_RECHECK) {
		CHECK(d->n_pages >= 1 && d->n_pages <= geo.max_run_pages);
		CHECK(d->first_page < geo.guest_pages && d->first_page + d->n_pages <= geo.guest_pages);
	}
	if (d->type == PROTO_DESC_BUFFER)
		CHECK(d->buffer < WK_ARENA_BUFFERS);
	if (d->type == PROTO_DESC_RESYNCED)
		CHECK((d->payload_len >> WK_ARENA_BUFFERS) == 0);
	if (d->type != PROTO_DESC_RUN)
		return;
	CHECK(d->encoding <= PROTO_ENC_LAST);
	if (d->encoding != PROTO_ENC_ZERO)
		CHECK(d->buffer < WK_ARENA_BUFFERS);
	if (d->encoding == PROTO_ENC_ZERO)
		CHECK(d->payload_len == 0);
	if (proto_encoding_is_zstd(d->encoding)) {
		uint64_t raw = (uint64_t)d->n_pages * geo.page_size;
		CHECK(d->payload_len >= 1 && d->payload_len < raw);
		/* The frame's CRC follows it in a buffer of the run's raw size. */
		static uint8_t buffer[4u << 20];
		uint32_t crc;
		bool fits = proto_desc_frame_crc(buffer, raw, d->payload_len, &crc);
		CHECK(fits == (d->payload_len + PROTO_DESC_FRAME_CRC_BYTES <= raw));
	}
}

/* What proto_desc.h says a slot may be, written out independently of
 * proto_desc_unpack: every consumer must accept exactly these. */
static bool model_desc(struct shm_slot s, uint32_t n_buffers)
{
	uint64_t first = s.w0;
	uint32_t type = s.w1 & 0xf, enc = (s.w1 >> 4) & 0xf, n = (s.w1 >> 8) & 0xfff, buffer = (s.w1 >> 20) & 0xfff;
	uint32_t len = (uint32_t)(s.w1 >> 32);
	bool pages = n >= 1 && n <= geo.max_run_pages && (unsigned __int128)first + n <= geo.guest_pages;
	switch (type) {
	case PROTO_DESC_RUN:
		if (!pages || enc > PROTO_ENC_ZSTD_SPARSE || (n_buffers && enc != PROTO_ENC_ZERO && buffer >= n_buffers))
			return false;
		if (enc == PROTO_ENC_ZERO)
			return len == 0;
		return (enc != PROTO_ENC_ZSTD && enc != PROTO_ENC_ZSTD_SPARSE) ||
		       (len >= 1 && len < (uint64_t)n * geo.page_size);
	case PROTO_DESC_BUFFER:
		return buffer < n_buffers;
	case PROTO_DESC_RECHECK:
		return pages;
	case PROTO_DESC_RESYNCED:
		return n_buffers >= 32 || (len >> n_buffers) == 0;
	case PROTO_DESC_FENCE:
	case PROTO_DESC_END:
	case PROTO_DESC_RESYNC:
	case PROTO_DESC_RECHECK_END:
	case PROTO_DESC_RECHECKED:
		return true;
	default:
		return false;
	}
}

static bool unpack(struct shm_slot slot, uint32_t n_buffers, struct proto_desc *d)
{
	bool ok = proto_desc_unpack(slot, &geo, n_buffers, d) == PROTO_OK;
	CHECK(ok == model_desc(slot, n_buffers));
	return ok;
}

/* Each field of a decoded descriptor at the edge of its rule, on rings
 * with and without buffers. */
static void probe_desc(const struct proto_desc *d)
{
	uint32_t raw = d->n_pages * geo.page_size;
	for (unsigned k = 0; k < 16; k++) {
		struct proto_desc v = *d, out;
		switch (k) {
		case 0: v.payload_len = raw - 1; break;
		case 1: v.payload_len = raw; break;
		case 2: v.payload_len = 0; break;
		case 3: v.n_pages = geo.max_run_pages; break;
		case 4: v.n_pages = geo.max_run_pages + 1; break;
		case 5: v.n_pages = 0; break;
		case 6: v.first_page = geo.guest_pages - v.n_pages; break;
		case 7: v.first_page = geo.guest_pages - v.n_pages + 1; break;
		case 8: v.buffer = WK_ARENA_BUFFERS - 1; break;
		case 9: v.buffer = WK_ARENA_BUFFERS; break;
		case 10: v.encoding = PROTO_ENC_LAST + 1; break;
		case 11: v.payload_len = ~0u >> (32 - WK_ARENA_BUFFERS); break;
		case 12: v.payload_len = 1u << WK_ARENA_BUFFERS; break;
		default: v.type = (uint8_t)(k - 13 + PROTO_DESC_RESYNCED); break; /* 9, 10, 11 */
		}
		struct shm_slot s = proto_desc_pack(&v);
		unpack(s, WK_ARENA_BUFFERS, &out);
		unpack(s, 0, &out);
	}
}

static void check_record(const struct proto_desc *d, const struct wk_record *r)
{
	uint64_t first = d->first_page;
	uint32_t n = d->n_pages;
	for (uint32_t k = 0; k < r->n_fp; k++) {
		struct wk_fp f = wk_record_fp(r, k);
		CHECK(f.chunk >= first / FP_CHUNK_PAGES && f.chunk <= (first + n - 1) / FP_CHUNK_PAGES);
	}
	if (d->encoding == PROTO_ENC_RAW) {
		CHECK(r->n_extents == 1 && !r->bitmap);
		return;
	}
	if (d->encoding == PROTO_ENC_ZSTD) {
		CHECK(r->n_extents == 0 && !r->bitmap);
		return;
	}
	CHECK(proto_encoding_has_bitmap(d->encoding) && r->bitmap);
	uint32_t k = 0, start, len, extents = 0, present = 0;
	while (proto_sparse_next_extent(r->bitmap, n, &k, &start, &len)) {
		CHECK(len >= 1 && start + len <= n);
		extents++;
		present += len;
	}
	CHECK(present > 0 && present < n);
	CHECK(proto_sparse_bitmap_check(r->bitmap, n, present) == PROTO_OK);
	/* SPARSE: an extent CRC per run of pages; ZSTD_SPARSE: none. */
	CHECK(r->n_extents == (d->encoding == PROTO_ENC_SPARSE ? extents : 0));
}

/* What wk_record.h says a record may be, written out independently of
 * wk_record_read: the writer must accept exactly these. */
static bool model_record(const struct proto_desc *d, const uint8_t *rec)
{
	uint32_t n_fp = get_le16(rec), n_ext = get_le16(rec + 2), n = d->n_pages;
	if (get_le32(rec + 4) != 0 || n_fp > WK_RECORD_MAX_PAGES + 1 || n_ext > WK_RECORD_MAX_PAGES / 2 + 1)
		return false;
	for (uint32_t k = 0; k < n_fp; k++) {
		uint64_t chunk = get_le64(rec + WK_RECORD_HEADER + 16 * k);
		if (chunk < d->first_page / FP_CHUNK_PAGES || chunk > (d->first_page + n - 1) / FP_CHUNK_PAGES)
			return false;
	}
	if (d->encoding == PROTO_ENC_RAW)
		return n_ext == 1;
	if (d->encoding == PROTO_ENC_ZSTD)
		return n_ext == 0;
	const uint8_t *bitmap = rec + WK_RECORD_HEADER + 16 * n_fp + 4 * n_ext;
	uint32_t present = 0, runs = 0;
	for (uint32_t k = 0; k < (n + 63) / 64 * 64; k++) {
		int bit = (bitmap[k / 8] >> (k % 8)) & 1;
		if (bit && k >= n)
			return false;
		present += bit;
		runs += bit && (k == 0 || !((bitmap[(k - 1) / 8] >> ((k - 1) % 8)) & 1));
	}
	if (d->encoding == PROTO_ENC_ZSTD_SPARSE)
		return present > 0 && present < n && n_ext == 0;
	return present > 0 && present < n && runs == n_ext;
}

static void try_record(const struct proto_desc *d, const uint8_t *rec, size_t len)
{
	static uint8_t shared[WK_RECORD_BYTES], copy[WK_RECORD_BYTES];
	static size_t used; /* bytes of shared the last record left non-zero */
	if (len > sizeof(shared))
		len = sizeof(shared);
	memcpy(shared, rec, len);
	if (used > len)
		memset(shared + len, 0, used - len);
	used = len;
	struct wk_record r;
	bool ok = wk_record_read(shared, d->encoding, d->first_page, d->n_pages, FP_CHUNK_PAGES, copy, &r);
	CHECK(ok == model_record(d, shared));
	if (ok)
		check_record(d, &r);
}

/* Records at the edges of the rules for this run, which mutation seldom
 * builds: every page present, none, a bit past the run, an extent count
 * one off, a fingerprint for the chunk before or after the run. */
static void probe_records(const struct proto_desc *d)
{
	static uint8_t rec[WK_RECORD_HEADER + 16 + 4 * 3 + PROTO_SPARSE_BITMAP_MAX];
	uint32_t n = d->n_pages;
	uint64_t lo = d->first_page / FP_CHUNK_PAGES, hi = (d->first_page + n - 1) / FP_CHUNK_PAGES;
	for (unsigned k = 0; k < 10; k++) {
		memset(rec, 0, sizeof(rec));
		uint32_t n_fp = k >= 7, n_ext = d->encoding == PROTO_ENC_RAW ? 1 : d->encoding == PROTO_ENC_SPARSE;
		uint8_t *bitmap = rec + WK_RECORD_HEADER + 16 * n_fp + 4 * 3;
		switch (k) {
		case 0: bitmap[0] = 1; break;				/* page 0 alone */
		case 1: memset(bitmap, 0xff, n / 8); bitmap[n / 8] = (uint8_t)((1u << (n % 8)) - 1); break; /* all */
		case 2: break;						/* none */
		case 3: bitmap[0] = 1, bitmap[n / 8] |= (uint8_t)(1u << (n % 8)); break; /* a bit past the run */
		case 4: bitmap[0] = 1, n_ext++; break;
		case 5: bitmap[0] = 1, n_ext = n_ext ? n_ext - 1 : 2; break;
		case 6: bitmap[0] = 5, n_ext = 2; break;		/* pages 0 and 2 */
		case 7: bitmap[0] = 1, put_le64(rec + WK_RECORD_HEADER, lo - 1); break;
		case 8: bitmap[0] = 1, put_le64(rec + WK_RECORD_HEADER, hi + 1); break;
		default: bitmap[0] = 1, put_le64(rec + WK_RECORD_HEADER, hi); break;
		}
		put_le16(rec, (uint16_t)n_fp);
		put_le16(rec + 2, (uint16_t)n_ext);
		/* The bitmap follows the extent CRCs actually announced. */
		memmove(rec + WK_RECORD_HEADER + 16 * n_fp + 4 * n_ext, bitmap, PROTO_SPARSE_BITMAP_MAX);
		try_record(d, rec, sizeof(rec));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 16)
		return 0;
	struct shm_slot slot = { .w0 = get_le64(data), .w1 = get_le64(data + 8) };
	struct proto_desc d;
	unpack(slot, 0, &d);
	if (!unpack(slot, WK_ARENA_BUFFERS, &d))
		return 0;
	check_desc(slot, &d);
	probe_desc(&d);
	if (d.type != PROTO_DESC_RUN || d.encoding == PROTO_ENC_ZERO)
		return 0;
	try_record(&d, data + 16, size - 16);
	probe_records(&d);
	return 0;
}
