/* Unit tests of the snapshot file's decoders (protocol/proto_snapfile.h):
 * header, bitmap, extent records and the device-state fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_snapfile.h"

/* ---- snapshot header and bitmap ---- */

struct snap {
	uint8_t header[PROTO_SNAP_FIELDS_SIZE];
	uint8_t bitmap[16];
	struct proto_snap_header h;
	uint64_t file_size;
};

static void make_snap(struct snap *s)
{
	assert_int_equal(proto_snap_header_init(&s->h, 4096, 100 * 4096), PROTO_OK);
	memset(s->bitmap, 0, sizeof(s->bitmap));
	proto_bitmap_set(s->bitmap, 0);
	proto_bitmap_set(s->bitmap, 63);
	proto_bitmap_set(s->bitmap, 99);
	s->h.pages_present = 3;
	s->h.bitmap_crc = proto_crc32c(0, s->bitmap, s->h.bitmap_len);
	s->h.state = PROTO_SNAP_COMPLETE;
	proto_snap_header_encode(&s->h, s->header);
	s->file_size = s->h.data_offset + s->h.guest_size;
}

static enum proto_err snap_with(size_t off, uint64_t v, size_t width)
{
	struct snap s;
	make_snap(&s);
	if (width == 4)
		put_le32(s.header + off, (uint32_t)v);
	else
		put_le64(s.header + off, v);
	put_le32(s.header + 124, proto_crc32c(0, s.header, 124));
	struct proto_snap_header out;
	return proto_snap_header_decode(s.header, sizeof(s.header), s.file_size, &out);
}

static void test_snapshot_roundtrip(void **state)
{
	(void)state;
	struct snap s;
	make_snap(&s);
	assert_int_equal(s.h.bitmap_len, 16);
	assert_int_equal(s.h.data_offset, 1 << 20);
	struct proto_snap_header out;
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size, &out), PROTO_OK);
	assert_int_equal(out.state, PROTO_SNAP_COMPLETE);
	assert_int_equal(out.page_size, 4096);
	assert_int_equal(out.guest_size, 100 * 4096);
	assert_int_equal(out.n_pages, 100);
	assert_int_equal(out.bitmap_offset, 4096);
	assert_int_equal(out.bitmap_len, 16);
	assert_int_equal(out.data_offset, 1 << 20);
	assert_int_equal(out.pages_present, 3);
	assert_int_equal(out.bitmap_crc, s.h.bitmap_crc);
	assert_int_equal(proto_snap_bitmap_check(&out, s.bitmap, sizeof(s.bitmap)), PROTO_OK);
	assert_true(proto_bitmap_test(s.bitmap, 63));
	assert_false(proto_bitmap_test(s.bitmap, 64));
	/* Bit i lives in little-endian u64 word i/64. */
	assert_int_equal(get_le64(s.bitmap), UINT64_C(1) | UINT64_C(1) << 63);
}

static void test_snapshot_malformed_fields(void **state)
{
	(void)state;
	struct snap s;
	struct proto_snap_header out;
	make_snap(&s);
	assert_int_equal(proto_snap_header_decode(s.header, 100, s.file_size, &out), PROTO_E_TRUNCATED);
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), 4095, &out),
			 PROTO_E_TRUNCATED);
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size - 1, &out),
			 PROTO_E_SNAP_FILE_SIZE);
	s.header[3] ^= 0x20;
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size, &out), PROTO_E_MAGIC);
	make_snap(&s);
	s.header[30] ^= 1;
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size, &out),
			 PROTO_E_HEADER_CHECKSUM);
	assert_int_equal(snap_with(8, 3, 4), PROTO_E_VERSION);
	/* Version 1 (no checksums) is refused by name. */
	assert_int_equal(snap_with(8, 1, 4), PROTO_E_SNAP_OLD_VERSION);
	assert_true(strstr(proto_strerror(PROTO_E_SNAP_OLD_VERSION), "version 1") != NULL);
	assert_int_equal(snap_with(12, PROTO_SNAP_WRITING, 4), PROTO_E_SNAP_INCOMPLETE);
	assert_int_equal(snap_with(12, 7, 4), PROTO_E_SNAP_STATE);
	assert_int_equal(snap_with(16, 8192, 4), PROTO_E_PAGE_SIZE);
	assert_int_equal(snap_with(20, 2, 4), PROTO_E_FLAGS);
	assert_int_equal(snap_with(20, 1, 4), PROTO_E_DEVICE_STATE_LEN); /* the flag without a length */
	assert_int_equal(snap_with(116, 7, 4), PROTO_E_RESERVED);	/* a CRC without the flag */
	assert_int_equal(snap_with(24, 100 * 4096 + 1, 8), PROTO_E_GUEST_SIZE);
	assert_int_equal(snap_with(32, 0, 8), PROTO_E_GUEST_SIZE);
	assert_int_equal(snap_with(40, 8192, 8), PROTO_E_BITMAP_OFFSET);
	assert_int_equal(snap_with(48, 8, 8), PROTO_E_BITMAP_LEN);
	assert_int_equal(snap_with(56, (1 << 20) + 4096, 8), PROTO_E_DATA_OFFSET);
	assert_int_equal(snap_with(56, 4096, 8), PROTO_E_DATA_OFFSET);
	assert_int_equal(snap_with(64, 101, 8), PROTO_E_PRESENT_COUNT);
	assert_int_equal(snap_with(112, 1, 4), PROTO_E_RESERVED); /* a length without the flag */
	assert_int_equal(snap_with(120, 1, 4), PROTO_E_RESERVED);
	assert_int_equal(snap_with(96, 3 * 4096, 8), PROTO_E_EXTENT_TABLE);
	assert_int_equal(snap_with(104, 4, 8), PROTO_E_EXTENT_COUNT); /* more extents than present pages */
}

static void test_snapshot_device_state_fields(void **state)
{
	(void)state;
	struct snap s;
	struct proto_snap_header out;
	make_snap(&s);
	put_le32(s.header + 20, PROTO_SNAP_F_DEVICE_STATE);
	put_le32(s.header + 112, 300);
	put_le32(s.header + 116, 0x12345678);
	put_le32(s.header + 124, proto_crc32c(0, s.header, 124));
	/* It lies after the page data: the file must hold it too. */
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size + 299, &out),
			 PROTO_E_SNAP_FILE_SIZE);
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size + 300, &out), PROTO_OK);
	assert_int_equal(out.device_state_len, 300);
	assert_int_equal(out.device_state_crc, 0x12345678);
	assert_int_equal(proto_snap_state_offset(&out), out.data_offset + out.guest_size);
	put_le32(s.header + 112, PROTO_SNAP_STATE_MAX + 1);
	put_le32(s.header + 124, proto_crc32c(0, s.header, 124));
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), UINT64_MAX / 2, &out),
			 PROTO_E_DEVICE_STATE_LEN);
	/* Encoding keeps the fields. */
	struct proto_snap_header h = out;
	h.device_state_len = 42;
	uint8_t enc[PROTO_SNAP_FIELDS_SIZE];
	proto_snap_header_encode(&h, enc);
	assert_int_equal(get_le32(enc + 20), PROTO_SNAP_F_DEVICE_STATE);
	assert_int_equal(get_le32(enc + 112), 42);
	assert_int_equal(get_le32(enc + 116), 0x12345678);
}

static void test_snapshot_bitmap_malformed(void **state)
{
	(void)state;
	struct snap s;
	make_snap(&s);
	assert_int_equal(proto_snap_bitmap_check(&s.h, s.bitmap, 8), PROTO_E_TRUNCATED);
	s.bitmap[1] ^= 1;
	assert_int_equal(proto_snap_bitmap_check(&s.h, s.bitmap, 16), PROTO_E_BITMAP_CHECKSUM);
	make_snap(&s);
	proto_bitmap_set(s.bitmap, 100); /* past page 99 */
	s.h.bitmap_crc = proto_crc32c(0, s.bitmap, 16);
	assert_int_equal(proto_snap_bitmap_check(&s.h, s.bitmap, 16), PROTO_E_BITMAP_TAIL);
	make_snap(&s);
	s.h.pages_present = 2;
	assert_int_equal(proto_snap_bitmap_check(&s.h, s.bitmap, 16), PROTO_E_PRESENT_COUNT);
	struct proto_snap_header h;
	assert_int_equal(proto_snap_header_init(&h, 4096, 4097), PROTO_E_GUEST_SIZE);
	assert_int_equal(proto_snap_header_init(&h, 1024, 4096), PROTO_E_PAGE_SIZE);
}

static void test_snapshot_extents(void **state)
{
	(void)state;
	struct snap s;
	make_snap(&s); /* pages 0, 63 and 99 present */
	/* Layout: table after the bitmap, room for one record per page, then data. */
	assert_int_equal(s.h.extent_table_offset, 8192);
	assert_int_equal(s.h.data_offset, 1 << 20);
	s.h.extent_count = 2;
	s.h.extent_crc = 0x1234;
	proto_snap_header_encode(&s.h, s.header);
	struct proto_snap_header h;
	assert_int_equal(proto_snap_header_decode(s.header, sizeof(s.header), s.file_size, &h), PROTO_OK);
	assert_int_equal(h.extent_count, 2);
	assert_int_equal(h.extent_crc, 0x1234);
	assert_int_equal(h.extent_table_offset, 8192);

	uint8_t rec[PROTO_SNAP_EXTENT_SIZE], seen[16] = { 0 };
	struct proto_snap_extent e = { .first_page = 63, .n_pages = 1, .crc = 0xabcdef01 }, out;
	proto_snap_extent_encode(&e, rec);
	assert_int_equal(get_le64(rec), 63);
	assert_int_equal(get_le32(rec + 8), 1);
	assert_int_equal(get_le32(rec + 12), 0xabcdef01);
	assert_int_equal(proto_snap_extent_decode(rec, &h, &out), PROTO_OK);
	assert_int_equal(out.first_page, 63);
	assert_int_equal(out.crc, 0xabcdef01);
	assert_int_equal(proto_snap_extent_claim(&h, s.bitmap, seen, &out), PROTO_OK);
	/* The same page again overlaps. */
	assert_int_equal(proto_snap_extent_claim(&h, s.bitmap, seen, &out), PROTO_E_EXTENT_OVERLAP);
	/* A page the bitmap does not have. */
	e = (struct proto_snap_extent){ .first_page = 98, .n_pages = 2 };
	proto_snap_extent_encode(&e, rec);
	assert_int_equal(proto_snap_extent_decode(rec, &h, &out), PROTO_OK);
	assert_int_equal(proto_snap_extent_claim(&h, s.bitmap, seen, &out), PROTO_E_EXTENT_ABSENT);
	/* Empty, past the end, or wrapping around. */
	e = (struct proto_snap_extent){ .first_page = 0, .n_pages = 0 };
	proto_snap_extent_encode(&e, rec);
	assert_int_equal(proto_snap_extent_decode(rec, &h, &out), PROTO_E_EXTENT_RANGE);
	e = (struct proto_snap_extent){ .first_page = 99, .n_pages = 2 };
	proto_snap_extent_encode(&e, rec);
	assert_int_equal(proto_snap_extent_decode(rec, &h, &out), PROTO_E_EXTENT_RANGE);
	e = (struct proto_snap_extent){ .first_page = UINT64_MAX, .n_pages = 2 };
	proto_snap_extent_encode(&e, rec);
	assert_int_equal(proto_snap_extent_decode(rec, &h, &out), PROTO_E_EXTENT_RANGE);
	/* The end: CRC first, then the total against the present count. */
	assert_int_equal(proto_snap_extents_end(&h, 3, 0x1234), PROTO_OK);
	assert_int_equal(proto_snap_extents_end(&h, 3, 0x1235), PROTO_E_EXTENT_CHECKSUM);
	assert_int_equal(proto_snap_extents_end(&h, 2, 0x1234), PROTO_E_EXTENT_TOTAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_roundtrip),
		cmocka_unit_test(test_snapshot_malformed_fields),
		cmocka_unit_test(test_snapshot_device_state_fields),
		cmocka_unit_test(test_snapshot_bitmap_malformed),
		cmocka_unit_test(test_snapshot_extents),
	};
	return cmocka_run_group_tests_name("snapfile", tests, NULL, NULL);
}
