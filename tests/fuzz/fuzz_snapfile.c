/* libFuzzer target for what `pageferry restore` and `check` decode from a
 * snapshot file (protocol/proto_snapfile.h): the header, the bitmap and
 * the extent table, through the real reader (dest/ds_restore.c
 * ds_restore_open, dest/ds_extents.c ds_extents_validate) on a memfd built
 * from the input, then the pages and extent checksums as `restore` or
 * `check` reads and verifies them (ds_restore_reader, ds_restore_result).  An input that starts with the
 * dirty log's magic is a dirty log instead (protocol/proto_dirtylog.h: the
 * other file pageferry maps and decodes, written by the VMM).
 *
 * Input: flags, the header's first 128 bytes, the bitmap (as many bytes as
 * the header's bitmap_len), the extent table (extent_count records), then
 * the pages the bitmap has, in page order.  What the input lacks is a hole
 * in the file and reads as zeros, as in a real sparse snapshot.
 * Flags: bit 0 set the header's bitmap CRC to the bitmap's, bit 1 its
 * extent CRC to the table's, bit 2 fix the header CRC (after the others;
 * fuzz.h says why), bit 3 make the file one page shorter than the header
 * needs.
 *
 * Invariants checked beyond "no crash":
 * - the header, bitmap and extent record decoders accept exactly what a
 *   model of doc/formats.md's rules, written out here, accepts, and the
 *   bitmap check names the same reason;
 * - a decoded header is consistent: geometry valid, regions in order and
 *   aligned, counts bounded, COMPLETE; encoding it gives back its bytes;
 *   it decodes with a file of exactly the size it needs and is refused,
 *   as truncated, with one byte less;
 * - the reader accepts the file exactly when the model of the bitmap and
 *   the table (CRC, every record non-empty, inside the guest, on present
 *   pages, disjoint, together every present page) does; a damaged bitmap
 *   or table is named as such;
 * - `restore` and `check` pass exactly when every extent's CRC matches its
 *   pages, and otherwise name the lowest extent that does not; `restore`
 *   leaves every page the bitmap has as in the file and every other zero.
 * Random mutation seldom lands exactly on the edge of a rule (an extent
 * count one above the present count, two extents that overlap while the
 * total stays right), so next to every header and every file the reader
 * accepts, the edges are tried too: each a single rule broken. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dest/ds_extents.h"
#include "dest/ds_restore.h"
#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_dirtylog.h"
#include "protocol/proto_geometry.h"
#include "protocol/proto_snapfile.h"
#include "stage/stage_sigbus.h"
#include "tests/fuzz/fuzz.h"

enum { FIX_BITMAP_CRC = 1, FIX_EXTENT_CRC = 2, FIX_HEADER_CRC = 4, SHORT_FILE = 8 };

/* Work per input stays small: bigger tables and bitmaps only repeat the
 * loops these already run. */
#define BITMAP_CAP (64u << 10)		/* 512 Ki pages */
#define TABLE_CAP (1u << 16)		/* records */
#define VERIFY_CAP (4u << 20)		/* page bytes `check` reads */
#define RESTORE_CAP (4u << 20)		/* guest bytes `restore` writes */

/* The stage runtime that dest/ds_place.c's ds_place_open calls: the
 * target builds its struct ds_place itself (a memfd, written by pwrite), so
 * none of it may be reached. */
void stage_fault_describe(enum stage_mapping kind, int fd, uint64_t size, char *out, size_t len)
{
	(void)kind, (void)fd, (void)size, (void)out, (void)len;
	CHECK(0);
}

void *stage_map_file(int fd, const char *what, uint64_t size, int writable)
{
	(void)fd, (void)what, (void)size, (void)writable;
	CHECK(0);
	return NULL;
}

void stage_die_errno(int neg_errno, const char *fmt, ...)
{
	(void)neg_errno, (void)fmt;
	CHECK(0);
	abort();
}

/* ds_place_write's guard around stores into a mapping: none here either. */
void stage_fault_guard(sigjmp_buf *resume)
{
	(void)resume;
	CHECK(0);
}

int stage_fault_recovered(void)
{
	CHECK(0);
	return 0;
}

/* What proto_dirtylog.h says a log may be, for the scanner's geometry. */
static int model_dirtylog(const uint8_t *log, uint64_t file_size, uint32_t page, uint64_t pages)
{
	return file_size >= 4096 && memcmp(log, "PFDIRTY1", 8) == 0 && get_le32(log + 8) == 2 &&
	       get_le32(log + 12) == page && get_le64(log + 16) == pages && get_le64(log + 24) == 4096 &&
	       file_size >= 4096 + (pages + 63) / 64 * 8;
}

static void check_dirtylog(const uint8_t *log, size_t size)
{
	if (size < PROTO_DIRTYLOG_BITMAP_OFFSET) {
		CHECK(proto_dirtylog_check(log, size, PROTO_PAGE_4K, 1024) == PROTO_E_TRUNCATED);
		return;
	}
	/* The scanner checks the log against its own, valid, geometry: the
	 * log's when that is valid, and next to it. */
	uint32_t page = get_le32(log + 12);
	uint64_t pages = get_le64(log + 16);
	if (!proto_page_size_valid(page) || !proto_guest_pages_valid(page, pages))
		page = PROTO_PAGE_4K, pages = 1024;
	uint64_t need = PROTO_DIRTYLOG_BITMAP_OFFSET + (pages + 63) / 64 * 8;
	const struct {
		uint64_t file_size, pages;
		uint32_t page;
	} tries[] = {
		{ size, pages, page },
		{ size, pages + 1, page },
		{ size, pages, page == PROTO_PAGE_4K ? PROTO_PAGE_2M : PROTO_PAGE_4K },
		{ need - 1, pages, page },
		{ need, pages, page },
		{ PROTO_DIRTYLOG_BITMAP_OFFSET - 1, pages, page },
	};
	for (unsigned k = 0; k < sizeof(tries) / sizeof(tries[0]); k++) {
		if (tries[k].file_size > size)
			continue; /* the mapping is the input: no further */
		enum proto_err err = proto_dirtylog_check(log, tries[k].file_size, tries[k].page, tries[k].pages);
		CHECK((err == PROTO_OK) == model_dirtylog(log, tries[k].file_size, tries[k].page, tries[k].pages));
	}
}

/* -- the model: doc/formats.md's rules, written out plainly ----------------- */

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int model_header(const uint8_t *b, uint64_t file_size)
{
	if (memcmp(b, "PGFERRY\x1a", 8) != 0 || get_le32(b + 8) != 2 || get_le32(b + 124) != proto_crc32c(0, b, 124))
		return 0;
	for (int k = 120; k < 124; k++)
		if (b[k])
			return 0;
	/* flags: bit 0 says a device state of 1 B..64 MiB follows the pages;
	 * without it, its length and CRC are 0. */
	uint32_t flags = get_le32(b + 20), state_len = get_le32(b + 112), state_crc = get_le32(b + 116);
	if (flags > 1 || (flags == 0 && (state_len || state_crc)) ||
	    (flags == 1 && (state_len == 0 || state_len > 64u << 20)))
		return 0;
	uint32_t page = get_le32(b + 16);
	uint64_t guest = get_le64(b + 24), n = get_le64(b + 32), bitmap_len = (n + 63) / 64 * 8;
	if (get_le32(b + 12) != PROTO_SNAP_COMPLETE || (page != 4096 && page != 2u << 20))
		return 0;
	if (n < 1 || (unsigned __int128)n * page > (unsigned __int128)1 << 46 || guest != n * page)
		return 0;
	uint64_t table = round_up(4096 + bitmap_len, 4096), data = round_up(table + n * 16, 1u << 20);
	if (get_le64(b + 40) != 4096 || get_le64(b + 48) != bitmap_len || get_le64(b + 96) != table ||
	    get_le64(b + 56) != data)
		return 0;
	uint64_t present = get_le64(b + 64), count = get_le64(b + 104);
	return present <= n && count <= present && file_size >= 4096 && file_size >= data + guest + state_len;
}

/* In the order proto_snapfile.h gives: checksum, bits past the last page,
 * present count. */
static enum proto_err model_bitmap(const struct proto_snap_header *h, const uint8_t *bitmap)
{
	if (proto_crc32c(0, bitmap, h->bitmap_len) != h->bitmap_crc)
		return PROTO_E_BITMAP_CHECKSUM;
	uint64_t present = 0;
	for (uint64_t bit = 0; bit < h->bitmap_len * 8; bit++) {
		if (!((bitmap[bit / 8] >> (bit % 8)) & 1))
			continue;
		if (bit >= h->n_pages)
			return PROTO_E_BITMAP_TAIL;
		present++;
	}
	return present == h->pages_present ? PROTO_OK : PROTO_E_PRESENT_COUNT;
}

static int model_extent(const struct proto_snap_header *h, const uint8_t *rec)
{
	uint64_t first = get_le64(rec);
	uint32_t n = get_le32(rec + 8);
	return n >= 1 && (unsigned __int128)first + n <= h->n_pages;
}

/* The whole table against a valid bitmap: PROTO_OK, the checksum error
 * (checked first, so that damage is named as such) or -1 (refused for a
 * reason the model does not name). */
static int model_table(const struct proto_snap_header *h, const uint8_t *bitmap, const uint8_t *table)
{
	if (proto_crc32c(0, table, h->extent_count * PROTO_SNAP_EXTENT_SIZE) != h->extent_crc)
		return PROTO_E_EXTENT_CHECKSUM;
	uint8_t *owner = calloc(h->n_pages, 1);
	CHECK(owner);
	uint64_t total = 0;
	int ok = 1;
	for (uint64_t i = 0; ok && i < h->extent_count; i++) {
		const uint8_t *rec = table + PROTO_SNAP_EXTENT_SIZE * i;
		if (!model_extent(h, rec)) {
			ok = 0;
			break;
		}
		uint64_t first = get_le64(rec);
		uint32_t n = get_le32(rec + 8);
		for (uint64_t p = first; ok && p < first + n; p++) {
			ok = ((bitmap[p / 8] >> (p % 8)) & 1) && !owner[p];
			owner[p] = 1;
		}
		total += n;
	}
	free(owner);
	return ok && total == h->pages_present ? PROTO_OK : -1;
}

/* -- the decoders against it ----------------------------------------------- */

static void check_header(const struct proto_snap_header *h, const uint8_t *fields)
{
	CHECK(h->state == PROTO_SNAP_COMPLETE);
	CHECK(proto_page_size_valid(h->page_size) && proto_guest_pages_valid(h->page_size, h->n_pages));
	CHECK(h->guest_size == h->n_pages * h->page_size);
	CHECK(h->bitmap_offset == PROTO_SNAP_HEADER_SIZE);
	CHECK(h->bitmap_len % 8 == 0 && h->bitmap_len * 8 >= h->n_pages && h->bitmap_len * 8 < h->n_pages + 64);
	CHECK(h->extent_table_offset % PROTO_SNAP_TABLE_ALIGN == 0 &&
	      h->extent_table_offset >= h->bitmap_offset + h->bitmap_len);
	CHECK(h->data_offset % PROTO_SNAP_DATA_ALIGN == 0 &&
	      h->data_offset >= h->extent_table_offset + h->n_pages * PROTO_SNAP_EXTENT_SIZE);
	CHECK(h->extent_count <= h->pages_present && h->pages_present <= h->n_pages);
	uint8_t again[PROTO_SNAP_FIELDS_SIZE];
	proto_snap_header_encode(h, again);
	CHECK(memcmp(again, fields, sizeof(again)) == 0);
	struct proto_snap_header back;
	uint64_t need = h->data_offset + h->guest_size + h->device_state_len; /* the state follows the pages */
	CHECK(proto_snap_header_decode(fields, PROTO_SNAP_FIELDS_SIZE, need, &back) == PROTO_OK);
	CHECK(proto_snap_header_decode(fields, PROTO_SNAP_FIELDS_SIZE, need - 1, &back) == PROTO_E_SNAP_FILE_SIZE);
	CHECK(proto_snap_header_decode(fields, PROTO_SNAP_FIELDS_SIZE, PROTO_SNAP_HEADER_SIZE - 1, &back) ==
	      PROTO_E_TRUNCATED);
}

static enum proto_err decode_header(const uint8_t *fields, struct proto_snap_header *h)
{
	enum proto_err err = proto_snap_header_decode(fields, PROTO_SNAP_FIELDS_SIZE, UINT64_MAX, h);
	CHECK((err == PROTO_OK) == model_header(fields, UINT64_MAX));
	if (err == PROTO_OK)
		check_header(h, fields);
	return err;
}

/* Each field of a decoded header at the edge of its rule. */
static void probe_header(const struct proto_snap_header *h)
{
	for (unsigned k = 0; k < 16; k++) {
		struct proto_snap_header v = *h, out;
		switch (k) {
		case 0: v.extent_count = v.pages_present; break;
		case 1: v.extent_count = v.pages_present + 1; break;
		case 2: v.pages_present = v.n_pages; break;
		case 3: v.pages_present = v.n_pages + 1; break;
		case 4: v.n_pages++; break;
		case 5: v.guest_size += v.page_size; break;
		case 6: v.bitmap_len += 8; break;
		case 7: v.bitmap_len -= 8; break;
		case 8: v.extent_table_offset += PROTO_SNAP_TABLE_ALIGN; break;
		case 9: v.data_offset += PROTO_SNAP_DATA_ALIGN; break;
		case 10: v.data_offset -= PROTO_SNAP_DATA_ALIGN; break;
		case 11: v.state = PROTO_SNAP_WRITING; break;
		case 12: v.state = 3; break;
		case 13: v.page_size = v.page_size == PROTO_PAGE_4K ? PROTO_PAGE_2M : PROTO_PAGE_4K; break;
		case 14: v.bitmap_offset += 8; break;
		default: /* the largest guest of this page size, and one page more */
			CHECK(proto_snap_header_init(&v, h->page_size, PROTO_MAX_GUEST_BYTES) == PROTO_OK);
			CHECK(proto_snap_header_init(&out, h->page_size, PROTO_MAX_GUEST_BYTES + h->page_size) ==
			      PROTO_E_GUEST_SIZE);
			v.state = PROTO_SNAP_COMPLETE;
			break;
		}
		uint8_t fields[PROTO_SNAP_FIELDS_SIZE];
		proto_snap_header_encode(&v, fields);
		decode_header(fields, &out);
	}
}

/* Bitmaps next to the input's, its CRC and the present count kept right:
 * the first bit past the last page set, the last page's bit flipped. */
static void probe_bitmap(const struct proto_snap_header *h, const uint8_t *bitmap)
{
	uint8_t *b = malloc(h->bitmap_len);
	CHECK(b);
	for (unsigned k = 0; k < 2; k++) {
		struct proto_snap_header v = *h;
		uint64_t bit = k == 0 ? h->n_pages : h->n_pages - 1;
		if (bit >= h->bitmap_len * 8)
			continue;
		memcpy(b, bitmap, h->bitmap_len);
		b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		v.pages_present += (b[bit / 8] >> (bit % 8)) & 1 ? 1 : -1;
		v.bitmap_crc = proto_crc32c(0, b, v.bitmap_len);
		CHECK(proto_snap_bitmap_check(&v, b, v.bitmap_len) == model_bitmap(&v, b));
	}
	free(b);
}

static void put_file(int fd, const void *buf, size_t len, uint64_t off)
{
	if (len)
		CHECK(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
}

/* Write header and table into the file (the bitmap and pages are there
 * already), open it as `restore` does and hold the answer against the
 * model.  The caller frees r->bitmap. */
static int open_file(int fd, const struct proto_snap_header *h, const uint8_t *bitmap, const uint8_t *table,
		     struct ds_restore *r)
{
	uint8_t fields[PROTO_SNAP_FIELDS_SIZE];
	proto_snap_header_encode(h, fields);
	put_file(fd, fields, sizeof(fields), 0);
	put_file(fd, table, h->extent_count * PROTO_SNAP_EXTENT_SIZE, h->extent_table_offset);
	const char *why = NULL;
	int rc = ds_restore_open(r, fd, fd, &why);
	CHECK(rc == 0 || (rc == -EBADMSG && why != NULL));
	enum proto_err b = model_bitmap(h, bitmap);
	if (b != PROTO_OK) {
		CHECK(rc == -EBADMSG && strcmp(why, proto_strerror(b)) == 0);
		return rc;
	}
	int t = model_table(h, bitmap, table);
	CHECK((rc == 0) == (t == PROTO_OK));
	if (t == PROTO_E_EXTENT_CHECKSUM)
		CHECK(strcmp(why, proto_strerror(PROTO_E_EXTENT_CHECKSUM)) == 0);
	return rc;
}

/* Next to a table the reader accepted, one rule broken at a time, the
 * table's CRC kept right (except where the CRC is the rule). */
static void probe_table(int fd, const struct proto_snap_header *h, const uint8_t *bitmap, const uint8_t *table)
{
	size_t bytes = h->extent_count * PROTO_SNAP_EXTENT_SIZE;
	uint8_t *t = malloc(bytes);
	CHECK(t);
	for (unsigned k = 0; k < 6; k++) {
		struct proto_snap_header v = *h;
		memcpy(t, table, bytes);
		uint64_t last = h->extent_count - 1, i_big = 0;
		for (uint64_t i = 1; i < h->extent_count; i++)
			if (get_le32(t + 16 * i + 8) > get_le32(t + 16 * i_big + 8))
				i_big = i;
		switch (k) {
		case 0: /* one page longer */
			put_le32(t + 8, get_le32(t + 8) + 1);
			break;
		case 1: /* one page earlier */
			put_le64(t, get_le64(t) - 1);
			break;
		case 2: /* the last extent moved into the largest: overlap, same total */
			if (i_big == last)
				i_big = 0;
			if (i_big == last || get_le32(t + 16 * i_big + 8) < get_le32(t + 16 * last + 8))
				continue;
			put_le64(t + 16 * last, get_le64(t + 16 * i_big));
			break;
		case 3: /* the last extent dropped: pages left without a checksum */
			v.extent_count--;
			break;
		case 4: /* past the end of the guest */
			put_le64(t, h->n_pages - 1);
			put_le32(t + 8, 2);
			break;
		default: /* a flipped byte: named as damage to the table */
			t[bytes / 2] ^= 1;
			break;
		}
		if (k != 5)
			v.extent_crc = proto_crc32c(0, t, v.extent_count * PROTO_SNAP_EXTENT_SIZE);
		struct ds_restore r;
		open_file(fd, &v, bitmap, t, &r);
		free(r.bitmap);
	}
	free(t);
}

/* The model of the extent checksums: the lowest extent whose pages in the
 * file do not match its CRC, or UINT64_MAX. */
static uint64_t lowest_bad_extent(int fd, const struct proto_snap_header *h, const uint8_t *table)
{
	uint8_t *page = malloc(h->page_size);
	CHECK(page);
	uint64_t bad = UINT64_MAX;
	for (uint64_t i = 0; i < h->extent_count && bad == UINT64_MAX; i++) {
		uint64_t first = get_le64(table + 16 * i);
		uint32_t n = get_le32(table + 16 * i + 8), crc = 0;
		for (uint64_t p = first; p < first + n; p++) {
			CHECK(pread(fd, page, h->page_size, (off_t)(h->data_offset + p * h->page_size)) ==
			      (ssize_t)h->page_size);
			crc = proto_crc32c(crc, page, h->page_size);
		}
		if (crc != get_le32(table + 16 * i + 12))
			bad = i;
	}
	free(page);
	return bad;
}

/* One reader thread over an opened file, as `restore` (r->dest set) or
 * `check` runs them: the lowest extent whose pages do not match its CRC
 * must be the one named. */
static void run_reader(int fd, struct ds_restore *r, const uint8_t *table)
{
	static struct shm_stats stats;
	/* Two readers, set up once: an AIO context costs milliseconds to tear
	 * down, far more than a run.  Between runs nothing is in flight and
	 * every buffer is free again.  One reads one read at a time, the other
	 * through AIO (restore picks by ds_restore_sync; the seeds are small
	 * and would all take the first): inputs alternate between them, so
	 * both read paths see every kind of input.  Each is set up for a file
	 * with extents, which gets buffers (one without gets none), whatever
	 * the first input holds. */
	static struct ds_reader *readers[2];
	static unsigned runs;
	const bool sync = runs++ % 2;
	struct ds_reader **rd_at = &readers[sync], *rd;
	uint64_t lowest_bad = lowest_bad_extent(fd, &r->hdr, table);
	r->stats = &stats;
	if (!*rd_at) {
		struct ds_restore reads = *r;
		reads.hdr.extent_count = sync ? 1 : DS_RESTORE_SYNC_READS + 1;
		reads.hdr.pages_present = 0;
		CHECK((*rd_at = calloc(1, sizeof(**rd_at))) != NULL);
		CHECK(ds_reader_init(*rd_at, &reads) == 0);
	}
	rd = *rd_at;
	CHECK(rd->free_slots == (sync ? 1 : ~0ull) && rd->long_pending == 0 && rd->n_free_open == DS_RESTORE_DEPTH + 1);
	rd->restore = r;
	rd->bytes_done = rd->pages_done = 0;
	ds_restore_reader(rd);
	char line[512], want[64];
	int rc = ds_restore_result(r, line, sizeof(line));
	if (lowest_bad == UINT64_MAX) {
		CHECK(rc == 0);
	} else {
		CHECK(rc == -1);
		snprintf(want, sizeof(want), "(extent %llu)", (unsigned long long)lowest_bad);
		CHECK(strstr(line, want) != NULL);
	}
}

/* `restore` into a destination memfd: every page the bitmap has holds the
 * file's page, every other page is zero. */
static void restore(int fd, struct ds_restore *r, const uint8_t *table)
{
	static int dest = -1;
	if (dest < 0)
		CHECK((dest = memfd_create("fuzz-snapfile-dest", MFD_CLOEXEC)) >= 0);
	CHECK(ftruncate(dest, 0) == 0);
	uint64_t size = r->hdr.guest_size, page = r->hdr.page_size;
	CHECK(ftruncate(dest, (off_t)size) == 0);
	static struct ds_place place;
	place = (struct ds_place){ .fd = dest };
	r->dest = &place;
	run_reader(fd, r, table);
	uint8_t *want = malloc(size), *got = malloc(size);
	CHECK(want && pread(fd, want, size, (off_t)r->hdr.data_offset) == (ssize_t)size);
	CHECK(got && pread(dest, got, size, 0) == (ssize_t)size);
	for (uint64_t p = 0; p < r->hdr.n_pages; p++) {
		if (!proto_bitmap_test(r->bitmap, p))
			memset(want + p * page, 0, page);
	}
	CHECK(memcmp(want, got, size) == 0);
	free(want);
	free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	if (fd < 0)
		CHECK((fd = memfd_create("fuzz-snapfile", MFD_CLOEXEC)) >= 0);
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	data++, size--;
	if (size >= 8 && get_le64(data) == PROTO_DIRTYLOG_MAGIC) {
		check_dirtylog(data, size);
		return 0;
	}
	uint8_t fields[PROTO_SNAP_FIELDS_SIZE] = { 0 };
	memcpy(fields, data, size < sizeof(fields) ? size : sizeof(fields));
	struct proto_snap_header h;
	if (size < sizeof(fields)) {
		CHECK(proto_snap_header_decode(fields, size, PROTO_SNAP_HEADER_SIZE, &h) == PROTO_E_TRUNCATED);
		return 0;
	}
	const uint8_t *rest = data + sizeof(fields);
	size_t rest_len = size - sizeof(fields);

	/* The bitmap and the table where the header places them: what the
	 * fix-ups checksum and what goes into the file. */
	uint64_t bitmap_len = get_le64(fields + 48), n_records = get_le64(fields + 104);
	if (bitmap_len > BITMAP_CAP || n_records > TABLE_CAP)
		bitmap_len = n_records = 0; /* the header alone is fuzzed */
	uint8_t *bitmap = calloc(bitmap_len + 1, 1), *table = calloc(n_records * PROTO_SNAP_EXTENT_SIZE + 1, 1);
	CHECK(bitmap && table);
	size_t take = rest_len < bitmap_len ? rest_len : bitmap_len;
	memcpy(bitmap, rest, take);
	rest += take, rest_len -= take;
	take = rest_len < n_records * PROTO_SNAP_EXTENT_SIZE ? rest_len : n_records * PROTO_SNAP_EXTENT_SIZE;
	memcpy(table, rest, take);
	rest += take, rest_len -= take;
	if (flags & FIX_BITMAP_CRC)
		put_le32(fields + 88, proto_crc32c(0, bitmap, bitmap_len));
	if (flags & FIX_EXTENT_CRC)
		put_le32(fields + 92, proto_crc32c(0, table, n_records * PROTO_SNAP_EXTENT_SIZE));
	if (flags & FIX_HEADER_CRC)
		put_le32(fields + 124, proto_crc32c(0, fields, 124));

	if (decode_header(fields, &h) != PROTO_OK)
		goto out;
	probe_header(&h);
	if (h.bitmap_len != bitmap_len || h.extent_count != n_records)
		goto out; /* over the caps */
	CHECK(proto_snap_bitmap_check(&h, bitmap, bitmap_len) == model_bitmap(&h, bitmap));
	CHECK(proto_snap_bitmap_check(&h, bitmap, bitmap_len - 1) == PROTO_E_TRUNCATED);
	probe_bitmap(&h, bitmap);
	for (uint64_t i = 0; i < n_records; i++) {
		struct proto_snap_extent e;
		const uint8_t *rec = table + PROTO_SNAP_EXTENT_SIZE * i;
		CHECK((proto_snap_extent_decode(rec, &h, &e) == PROTO_OK) == model_extent(&h, rec));
	}

	/* The file: header block, bitmap, table, the pages the bitmap has, and
	 * room for the device state the header declares. */
	uint64_t file_size = proto_snap_state_offset(&h) + h.device_state_len - (flags & SHORT_FILE ? h.page_size : 0);
	CHECK(ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)file_size) == 0);
	put_file(fd, bitmap, bitmap_len, h.bitmap_offset);
	for (uint64_t p = 0; p < h.n_pages && rest_len; p++) {
		if (!proto_bitmap_test(bitmap, p))
			continue;
		take = rest_len < h.page_size ? rest_len : h.page_size;
		if (h.data_offset + (p + 1) * h.page_size <= file_size)
			put_file(fd, rest, take, h.data_offset + p * h.page_size);
		rest += take, rest_len -= take;
	}
	struct ds_restore r;
	if (flags & SHORT_FILE) {
		const char *why = NULL;
		put_file(fd, fields, sizeof(fields), 0);
		put_file(fd, table, n_records * PROTO_SNAP_EXTENT_SIZE, h.extent_table_offset);
		CHECK(ds_restore_open(&r, fd, fd, &why) == -EBADMSG && why &&
		      strcmp(why, proto_strerror(PROTO_E_SNAP_FILE_SIZE)) == 0);
		free(r.bitmap);
		goto out;
	}
	int rc = open_file(fd, &h, bitmap, table, &r);
	if (rc == 0 && h.guest_size <= RESTORE_CAP) {
		restore(fd, &r, table);
		free(r.bitmap);
		open_file(fd, &h, bitmap, table, &r); /* afresh, for `check` */
	}
	if (rc == 0 && h.pages_present * h.page_size <= VERIFY_CAP)
		run_reader(fd, &r, table);
	free(r.bitmap);
	if (rc == 0 && h.extent_count > 0)
		probe_table(fd, &h, bitmap, table);
out:
	free(bitmap);
	free(table);
	return 0;
}
