/* Protocol codecs of the wire and the rings: every message round-trips, and
 * every malformed field is refused with its own error (the snapshot file's
 * are in test_snapfile.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_desc.h"
#include "protocol/proto_handshake.h"
#include "protocol/proto_packet.h"
#include "protocol/proto_snapfile.h" /* PROTO_SNAP_STATE_MAX: the same limit on the wire */
#include "protocol/proto_state.h"

static const struct proto_geometry geo = { .page_size = 4096, .max_run_pages = 64,
					   .guest_pages = 1000 };

static void test_crc32c_known_vector(void **state)
{
	(void)state;
	assert_int_equal(proto_crc32c(0, "123456789", 9), 0xE3069283u);
	/* Chained calls equal one call. */
	uint32_t c = proto_crc32c(0, "12345", 5);
	assert_int_equal(proto_crc32c(c, "6789", 4), 0xE3069283u);
	assert_int_equal(proto_crc32c(0, "", 0), 0);
}

/* Bit by bit, independent of the table and instruction paths. */
static uint32_t crc32c_reference(const uint8_t *p, size_t len)
{
	uint32_t c = ~0u;
	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
	}
	return ~c;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint8_t rng_byte(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint8_t)(rng_state >> 56);
}

static void test_crc32c_long_and_combine(void **state)
{
	(void)state;
	static uint8_t buf[3 * 4096 + 77];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = rng_byte();
	/* Lengths around the three-lane block (4032 bytes) and pages. */
	const size_t lens[] = { 0, 1, 7, 8, 63, 4031, 4032, 4033, 4096, 8064, 8065, 3 * 4096 + 77 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		assert_int_equal(proto_crc32c(0, buf, lens[i]), crc32c_reference(buf, lens[i]));
	/* combine(crc(A), crc(B), |B|) = crc(A||B), for splits of every kind. */
	const size_t splits[][2] = { { 0, 4096 }, { 4096, 4096 }, { 4096, 8192 }, { 1, 1 }, { 100, 4097 },
				     { 4096, 0 }, { 5, 3 * 4096 + 72 }, { 8192, 4096 } };
	for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		size_t a = splits[i][0], b = splits[i][1];
		uint32_t whole = crc32c_reference(buf, a + b);
		uint32_t ca = proto_crc32c(0, buf, a), cb = proto_crc32c(0, buf + a, b);
		assert_int_equal(proto_crc32c_combine(ca, cb, b), whole);
		struct proto_crc32c_shift sh;
		proto_crc32c_shift_init(&sh, b);
		assert_int_equal(proto_crc32c_shift_combine(&sh, ca, cb), whole);
	}
	/* Page by page, as the workers build a sub-run's CRC. */
	struct proto_crc32c_shift page;
	proto_crc32c_shift_init(&page, 4096);
	uint32_t run = 0;
	for (int k = 0; k < 3; k++)
		run = proto_crc32c_shift_combine(&page, run, proto_crc32c(0, buf + k * 4096, 4096));
	assert_int_equal(run, crc32c_reference(buf, 3 * 4096));
	/* Lengths far past the table's period of 31 doublings. */
	uint32_t c = proto_crc32c(0, buf, 100);
	assert_int_equal(proto_crc32c_combine(proto_crc32c_combine(c, 0, 1ull << 40), 0, 1ull << 40),
			 proto_crc32c_combine(c, 0, 1ull << 41));
}

/* Every length and alignment across the folding path's steps (256-byte
 * blocks, 16-byte folds, the tail), continuing from a CRC already begun,
 * and the path chosen is the one the CPU has. */
static void test_crc32c_every_length(void **state)
{
	(void)state;
	static uint8_t buf[4096 + 1100 + 8];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = rng_byte();
	const uint32_t head = crc32c_reference(buf + 1000, 3);
	for (size_t len = 0; len <= 1100; len++)
		for (size_t off = 0; off < 4; off++) {
			uint32_t whole = proto_crc32c(head, buf + off, len);
			assert_int_equal(whole, proto_crc32c_combine(head, crc32c_reference(buf + off, len), len));
		}
	for (size_t len = 4096 - 17; len <= 4096 + 17; len++)
		assert_int_equal(proto_crc32c(0, buf + 3, len), crc32c_reference(buf + 3, len));
#if defined(__x86_64__)
	__builtin_cpu_init();
	const char *want = "table";
	if (__builtin_cpu_supports("sse4.2"))
		want = "sse4.2";
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") &&
	    __builtin_cpu_supports("pclmul"))
		want = "vpclmulqdq";
	assert_string_equal(proto_crc32c_method(), want);
#endif
}

static void test_error_messages_are_distinct(void **state)
{
	(void)state;
	for (int a = 1; a < _PROTO_E_MAX; a++)
		for (int b = a + 1; b < _PROTO_E_MAX; b++)
			assert_string_not_equal(proto_strerror(a), proto_strerror(b));
	assert_string_equal(proto_strerror(_PROTO_E_MAX), "unknown protocol error");
}

/* ---- handshake ---- */

static struct proto_handshake sample_handshake(void)
{
	struct proto_handshake h = { .channel_kind = PROTO_CHAN_DATA, .channel_id = 2,
				     .geo = geo, .n_channels = 4, .features = PROTO_F_ZSTD };
	for (int i = 0; i < 16; i++)
		h.session_id[i] = (uint8_t)(0xa0 + i);
	return h;
}

static void resign_handshake(uint8_t *b)
{
	put_le32(b + 60, proto_crc32c(0, b, 60));
}

static void test_handshake_roundtrip(void **state)
{
	(void)state;
	struct proto_handshake h = sample_handshake(), out;
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	proto_handshake_encode(&h, buf);
	assert_int_equal(proto_handshake_decode(buf, sizeof(buf), &out), PROTO_OK);
	assert_memory_equal(&h.session_id, &out.session_id, 16);
	assert_int_equal(out.channel_id, 2);
	assert_int_equal(out.geo.guest_pages, 1000);
	assert_int_equal(out.geo.max_run_pages, 64);
	assert_int_equal(out.features, PROTO_F_ZSTD);
	assert_int_equal(proto_handshake_match(&out, &h), PROTO_OK);
}

static enum proto_err handshake_with(size_t off, uint64_t v, size_t width, int resign)
{
	struct proto_handshake h = sample_handshake(), out;
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	proto_handshake_encode(&h, buf);
	if (width == 1)
		buf[off] = (uint8_t)v;
	else if (width == 2)
		put_le16(buf + off, (uint16_t)v);
	else if (width == 4)
		put_le32(buf + off, (uint32_t)v);
	else
		put_le64(buf + off, v);
	if (resign)
		resign_handshake(buf);
	return proto_handshake_decode(buf, sizeof(buf), &out);
}

static void test_handshake_malformed_fields(void **state)
{
	(void)state;
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	struct proto_handshake h = sample_handshake(), out;
	proto_handshake_encode(&h, buf);
	assert_int_equal(proto_handshake_decode(buf, 63, &out), PROTO_E_TRUNCATED);
	assert_int_equal(handshake_with(0, 0x11223344, 4, 1), PROTO_E_MAGIC);
	assert_int_equal(handshake_with(4, 1, 2, 1), PROTO_E_VERSION);
	assert_int_equal(handshake_with(24, 8192, 4, 0), PROTO_E_HEADER_CHECKSUM);
	assert_int_equal(handshake_with(50, 1, 1, 1), PROTO_E_RESERVED);
	assert_int_equal(handshake_with(42, 1000, 2, 1), PROTO_E_STATUS);
	assert_int_equal(handshake_with(6, 7, 1, 1), PROTO_E_CHANNEL_KIND);
	assert_int_equal(handshake_with(7, 4, 1, 1), PROTO_E_CHANNEL_ID);
	assert_int_equal(handshake_with(40, 0, 2, 1), PROTO_E_CHANNEL_COUNT);
	assert_int_equal(handshake_with(40, 65, 2, 1), PROTO_E_CHANNEL_COUNT);
	assert_int_equal(handshake_with(24, 8192, 4, 1), PROTO_E_PAGE_SIZE);
	assert_int_equal(handshake_with(28, 0, 4, 1), PROTO_E_RUN_LIMIT);
	assert_int_equal(handshake_with(28, 2048, 4, 1), PROTO_E_RUN_LIMIT); /* 8 MiB > limit */
	assert_int_equal(handshake_with(32, 0, 8, 1), PROTO_E_GUEST_SIZE);
	assert_int_equal(handshake_with(32, UINT64_MAX / 2, 8, 1), PROTO_E_GUEST_SIZE);
	assert_int_equal(handshake_with(44, 1u << 9, 4, 1), PROTO_E_FEATURES);
}

static void test_handshake_mismatch(void **state)
{
	(void)state;
	struct proto_handshake ours = sample_handshake(), peer = ours;
	peer.session_id[15] ^= 1;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_SESSION);
	peer = ours;
	peer.geo.page_size = PROTO_PAGE_2M;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_PAGE_SIZE);
	peer = ours;
	peer.geo.guest_pages++;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_GUEST_SIZE);
	peer = ours;
	peer.geo.max_run_pages = 32;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_RUN_LIMIT);
	peer = ours;
	peer.n_channels = 2;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_CHANNEL_COUNT);
	peer = ours;
	peer.features = 0;
	assert_int_equal(proto_handshake_match(&peer, &ours), PROTO_E_FEATURES);
}

/* ---- packets ---- */

static struct proto_packet data_packet(uint8_t enc, uint64_t first, uint32_t n, uint32_t len)
{
	return (struct proto_packet){ .type = PROTO_PKT_DATA, .encoding = enc, .round = 3,
				      .n_pages = n, .first_page = first, .seq = 77,
				      .payload_len = len, .payload_crc = 0xdeadbeef };
}

static enum proto_err decode_packet(const struct proto_packet *p)
{
	uint8_t buf[PROTO_PACKET_HEADER_SIZE];
	struct proto_packet out;
	proto_packet_encode(p, buf);
	return proto_packet_decode(buf, sizeof(buf), &geo, &out);
}

static void test_packet_roundtrip(void **state)
{
	(void)state;
	struct proto_packet p = data_packet(PROTO_ENC_RAW, 936, 64, 64 * 4096), out;
	uint8_t buf[PROTO_PACKET_HEADER_SIZE];
	proto_packet_encode(&p, buf);
	assert_int_equal(proto_packet_decode(buf, sizeof(buf), &geo, &out), PROTO_OK);
	assert_int_equal(out.type, p.type);
	assert_int_equal(out.encoding, p.encoding);
	assert_int_equal(out.round, p.round);
	assert_int_equal(out.n_pages, p.n_pages);
	assert_int_equal(out.first_page, p.first_page);
	assert_int_equal(out.seq, p.seq);
	assert_int_equal(out.payload_len, p.payload_len);
	assert_int_equal(out.payload_crc, p.payload_crc);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_SYNC, .round = 4 }), PROTO_OK);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_END,
							      .payload_len = PROTO_END_BODY_SIZE }),
			 PROTO_OK);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 1,
							      .first_page = 999 }),
			 PROTO_OK);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA,
							      .encoding = PROTO_ENC_ZSTD, .n_pages = 2,
							      .payload_len = 100 }),
			 PROTO_OK);

	struct proto_end_body e = { .packets = 5, .pages = 300, .payload_bytes = 1 << 20,
				    .crc_of_crcs = 0x1234 }, eo;
	uint8_t eb[PROTO_END_BODY_SIZE];
	proto_end_body_encode(&e, eb);
	assert_int_equal(proto_end_body_decode(eb, sizeof(eb), &eo), PROTO_OK);
	assert_int_equal(eo.packets, 5);
	assert_int_equal(eo.pages, 300);
	assert_int_equal(eo.payload_bytes, 1 << 20);
	assert_int_equal(eo.crc_of_crcs, 0x1234);
	assert_int_equal(proto_end_body_decode(eb, 31, &eo), PROTO_E_TRUNCATED);
	/* The body ends in its own CRC (wire version 3). */
	eb[29] ^= 1;
	assert_int_equal(proto_end_body_decode(eb, sizeof(eb), &eo), PROTO_E_PAYLOAD_CHECKSUM);
	eb[29] ^= 1;
	eb[3] ^= 1;
	assert_int_equal(proto_end_body_decode(eb, sizeof(eb), &eo), PROTO_E_PAYLOAD_CHECKSUM);
}

static enum proto_err packet_bytes_with(size_t off, uint32_t v, size_t width, int resign)
{
	struct proto_packet p = data_packet(PROTO_ENC_RAW, 0, 1, 4096), out;
	uint8_t buf[PROTO_PACKET_HEADER_SIZE];
	proto_packet_encode(&p, buf);
	if (width == 1)
		buf[off] = (uint8_t)v;
	else if (width == 2)
		put_le16(buf + off, (uint16_t)v);
	else
		put_le32(buf + off, v);
	if (resign)
		put_le32(buf + 44, proto_crc32c(0, buf, 44));
	return proto_packet_decode(buf, sizeof(buf), &geo, &out);
}

static void test_packet_malformed_fields(void **state)
{
	(void)state;
	struct proto_packet out;
	uint8_t buf[PROTO_PACKET_HEADER_SIZE] = { 0 };
	assert_int_equal(proto_packet_decode(buf, 47, &geo, &out), PROTO_E_TRUNCATED);
	assert_int_equal(packet_bytes_with(0, 0x11223344, 4, 1), PROTO_E_MAGIC);
	assert_int_equal(packet_bytes_with(12, 2, 4, 0), PROTO_E_HEADER_CHECKSUM);
	assert_int_equal(packet_bytes_with(6, 1, 2, 1), PROTO_E_FLAGS);
	assert_int_equal(packet_bytes_with(40, 1, 4, 1), PROTO_E_RESERVED);
	/* Only page payloads carry a payload CRC: ZERO, SYNC, END and RESULT
	 * headers have 0 there. */
	struct proto_packet z = data_packet(PROTO_ENC_ZERO, 0, 1, 0);
	assert_int_equal(decode_packet(&z), PROTO_E_RESERVED);
	z.payload_crc = 0;
	assert_int_equal(decode_packet(&z), PROTO_OK);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_SYNC, .round = 1, .payload_crc = 1 }),
			 PROTO_E_RESERVED);
	assert_int_equal(packet_bytes_with(4, 9, 1, 1), PROTO_E_PACKET_TYPE);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA,
							      .encoding = PROTO_ENC_LAST + 1, .n_pages = 1 }),
			 PROTO_E_ENCODING);
	/* page counts and offsets against the geometry */
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA }), PROTO_E_PAGE_COUNT);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 65 }),
			 PROTO_E_PAGE_COUNT);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 1,
							      .first_page = 1000 }),
			 PROTO_E_PAGE_OFFSET);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 2,
							      .first_page = 999 }),
			 PROTO_E_PAGE_OFFSET);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 1,
							      .first_page = UINT64_MAX }),
			 PROTO_E_PAGE_OFFSET);
	/* payload lengths that lie */
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 1,
							      .payload_len = 1 }),
			 PROTO_E_PAYLOAD_LEN);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 2,
							      .encoding = PROTO_ENC_RAW, .payload_len = 4096 }),
			 PROTO_E_PAYLOAD_LEN);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 2,
							      .encoding = PROTO_ENC_ZSTD, .payload_len = 8192 }),
			 PROTO_E_PAYLOAD_LEN);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_DATA, .n_pages = 2,
							      .encoding = PROTO_ENC_ZSTD }),
			 PROTO_E_PAYLOAD_LEN);
	/* control packets carry no pages */
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_SYNC, .n_pages = 1 }),
			 PROTO_E_PAGE_COUNT);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_SYNC, .first_page = 1 }),
			 PROTO_E_PAGE_OFFSET);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_SYNC, .encoding = 1 }),
			 PROTO_E_ENCODING);
	assert_int_equal(decode_packet(&(struct proto_packet){ .type = PROTO_PKT_END, .payload_len = 4 }),
			 PROTO_E_PAYLOAD_LEN);
}

/* ZSTD_SPARSE: a bitmap, then a frame of fewer than n_pages pages. */
static void test_zstd_sparse_packets(void **state)
{
	(void)state;
	struct proto_packet p = data_packet(PROTO_ENC_ZSTD_SPARSE, 10, 64, 8 + 100);
	assert_int_equal(decode_packet(&p), PROTO_OK);
	p.payload_len = 8 + 63 * 4096 - 1; /* the largest frame: under 63 pages */
	assert_int_equal(decode_packet(&p), PROTO_OK);
	p.payload_len = 8 + 63 * 4096;
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p.payload_len = 8; /* no frame */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p = data_packet(PROTO_ENC_ZSTD_SPARSE, 10, 1, 8 + 10); /* one page cannot be sparse */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p = data_packet(PROTO_ENC_LAST + 1, 10, 64, 8 + 100);
	assert_int_equal(decode_packet(&p), PROTO_E_ENCODING);

	/* Its bitmap: some pages but not all, none past the run; the count. */
	uint8_t bm[16] = { 0 };
	uint32_t present = 0;
	assert_int_equal(proto_sparse_bitmap_some(bm, 70, &present), PROTO_E_SPARSE_BITMAP);
	bm[0] = 0x05;
	bm[8] = 0x20; /* pages 0, 2 and 69 */
	assert_int_equal(proto_sparse_bitmap_some(bm, 70, &present), PROTO_OK);
	assert_int_equal(present, 3);
	bm[8] = 0x40; /* page 70: past the run */
	assert_int_equal(proto_sparse_bitmap_some(bm, 70, &present), PROTO_E_SPARSE_BITMAP);
	memset(bm, 0xff, 8);
	bm[8] = 0x3f; /* every page */
	assert_int_equal(proto_sparse_bitmap_some(bm, 70, &present), PROTO_E_SPARSE_BITMAP);
	bm[8] = 0x1f; /* all but the last */
	assert_int_equal(proto_sparse_bitmap_some(bm, 70, &present), PROTO_OK);
	assert_int_equal(present, 69);
}

static void test_sparse_packets(void **state)
{
	(void)state;
	/* 64 pages: an 8-byte bitmap, then 1..63 present pages. */
	struct proto_packet p = data_packet(PROTO_ENC_SPARSE, 10, 64, 8 + 3 * 4096);
	assert_int_equal(decode_packet(&p), PROTO_OK);
	p.payload_len = 8 + 63 * 4096;
	assert_int_equal(decode_packet(&p), PROTO_OK);
	p.payload_len = 8 + 64 * 4096; /* every page present: that is RAW */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p.payload_len = 8; /* none present: that is ZERO */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p.payload_len = 8 + 4096 + 1; /* not whole pages */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p.payload_len = 4;
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);
	p = data_packet(PROTO_ENC_SPARSE, 10, 1, 8 + 4096); /* one page cannot be sparse */
	assert_int_equal(decode_packet(&p), PROTO_E_PAYLOAD_LEN);

	/* The bitmap: exactly `present` bits, none past the run. */
	assert_int_equal(proto_sparse_bitmap_bytes(1), 8);
	assert_int_equal(proto_sparse_bitmap_bytes(64), 8);
	assert_int_equal(proto_sparse_bitmap_bytes(65), 16);
	assert_int_equal(proto_sparse_bitmap_bytes(4095), PROTO_SPARSE_BITMAP_MAX);
	uint8_t bm[16] = { 0 };
	bm[0] = 0x05;	/* pages 0 and 2 */
	bm[8] = 0x01;	/* page 64 */
	assert_int_equal(proto_sparse_bitmap_check(bm, 70, 3), PROTO_OK);
	assert_true(proto_sparse_bit(bm, 2) && !proto_sparse_bit(bm, 1) && proto_sparse_bit(bm, 64));
	assert_int_equal(proto_sparse_bitmap_check(bm, 70, 2), PROTO_E_SPARSE_BITMAP);
	assert_int_equal(proto_sparse_bitmap_check(bm, 70, 4), PROTO_E_SPARSE_BITMAP);
	bm[8] = 0x41;	/* page 70: one past the run */
	assert_int_equal(proto_sparse_bitmap_check(bm, 70, 4), PROTO_E_SPARSE_BITMAP);
	bm[8] = 0x21;	/* page 69: the last one */
	assert_int_equal(proto_sparse_bitmap_check(bm, 70, 4), PROTO_OK);
	bm[8] = 0;
	bm[7] = 0x80;	/* page 63 of a 60-page run */
	assert_int_equal(proto_sparse_bitmap_check(bm, 60, 3), PROTO_E_SPARSE_BITMAP);
}

static void test_device_state_header(void **state)
{
	(void)state;
	uint8_t b[PROTO_STATE_HEADER_SIZE];
	struct proto_state_header h;
	proto_state_header_encode(&(struct proto_state_header){ .length = 292965, .crc = 0xdeadbeef }, b);
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_OK);
	assert_int_equal(h.length, 292965);
	assert_int_equal(h.crc, 0xdeadbeef);
	b[0] ^= 1;
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_E_MAGIC);
	b[0] ^= 1;
	put_le32(b + 4, 0);
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_E_DEVICE_STATE_LEN);
	put_le32(b + 4, PROTO_SNAP_STATE_MAX + 1);
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_E_DEVICE_STATE_LEN);
	put_le32(b + 4, PROTO_SNAP_STATE_MAX);
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_OK);
	put_le32(b + 12, 1);
	assert_int_equal(proto_state_header_decode(b, &h), PROTO_E_RESERVED);
}

/* ---- ring descriptors ---- */

static void test_descriptor_roundtrip_and_checks(void **state)
{
	(void)state;
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = PROTO_ENC_ZSTD, .buffer = 17,
				.n_pages = 64, .payload_len = 12345, .first_page = 936 }, out;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 32, &out), PROTO_OK);
	assert_int_equal(out.type, d.type);
	assert_int_equal(out.encoding, d.encoding);
	assert_int_equal(out.buffer, d.buffer);
	assert_int_equal(out.n_pages, d.n_pages);
	assert_int_equal(out.payload_len, d.payload_len);
	assert_int_equal(out.first_page, d.first_page);
	struct shm_slot s = proto_desc_pack(&d);
	assert_int_equal(proto_desc_unpack(s, &geo, 17, &out), PROTO_E_DESC_BUFFER);
	s.w0 = 937;
	assert_int_equal(proto_desc_unpack(s, &geo, 32, &out), PROTO_E_PAGE_OFFSET);
	s = proto_desc_pack(&d);
	s.w1 = (s.w1 & ~UINT64_C(0xf)) | 10;
	assert_int_equal(proto_desc_unpack(s, &geo, 32, &out), PROTO_E_DESC_TYPE);
	s = proto_desc_pack(&d);
	s.w1 = (s.w1 & ~UINT64_C(0xf0)) | (7u << 4);
	assert_int_equal(proto_desc_unpack(s, &geo, 32, &out), PROTO_E_ENCODING);
	d.n_pages = 0;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 32, &out), PROTO_E_PAGE_COUNT);
	d.n_pages = 1;
	d.payload_len = 4097;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 32, &out), PROTO_E_PAYLOAD_LEN);
	d.payload_len = 4096; /* a zstd frame as large as its pages is never sent */
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 32, &out), PROTO_E_PAYLOAD_LEN);
	d.payload_len = 0;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 32, &out), PROTO_E_PAYLOAD_LEN);
	/* RAW carries the run's CRC: any value; ZERO carries nothing. */
	d.encoding = PROTO_ENC_RAW;
	d.payload_len = 0xfedcba98u;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 0, &out), PROTO_OK);
	assert_int_equal(out.payload_len, 0xfedcba98u);
	d.encoding = PROTO_ENC_ZERO;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&d), &geo, 0, &out), PROTO_E_PAYLOAD_LEN);
	/* A frame's CRC follows it; a frame that leaves no room for it is refused. */
	uint8_t buf[16] = { 0 };
	uint32_t crc = 0;
	buf[10] = 0x78, buf[11] = 0x56, buf[12] = 0x34, buf[13] = 0x12;
	assert_true(proto_desc_frame_crc(buf, sizeof(buf), 10, &crc));
	assert_int_equal(crc, 0x12345678u);
	assert_true(proto_desc_frame_crc(buf, sizeof(buf), 12, &crc));
	assert_false(proto_desc_frame_crc(buf, sizeof(buf), 13, &crc));
	assert_false(proto_desc_frame_crc(buf, sizeof(buf), 0xffffffffu, &crc));
	struct proto_desc back = { .type = PROTO_DESC_BUFFER, .buffer = 15 };
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&back), &geo, 16, &out), PROTO_OK);
	assert_int_equal(out.buffer, 15);
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&back), &geo, 15, &out), PROTO_E_DESC_BUFFER);
	struct proto_desc end = { .type = PROTO_DESC_END };
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&end), &geo, 0, &out), PROTO_OK);
	assert_int_equal(out.type, PROTO_DESC_END);
	/* A worker's SPARSE and RAW runs name their record's buffer. */
	struct proto_desc sparse = { .type = PROTO_DESC_RUN, .encoding = PROTO_ENC_SPARSE, .buffer = 15,
				     .n_pages = 8, .payload_len = 0xabcdef01u, .first_page = 0 };
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&sparse), &geo, 16, &out), PROTO_OK);
	assert_int_equal(out.payload_len, 0xabcdef01u);
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&sparse), &geo, 15, &out), PROTO_E_DESC_BUFFER);
	/* ZSTD_SPARSE: a frame length, as ZSTD's. */
	struct proto_desc zs = { .type = PROTO_DESC_RUN, .encoding = PROTO_ENC_ZSTD_SPARSE, .buffer = 3,
				 .n_pages = 8, .payload_len = 8 * 4096 - 1 };
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&zs), &geo, 16, &out), PROTO_OK);
	zs.payload_len = 8 * 4096;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&zs), &geo, 16, &out), PROTO_E_PAYLOAD_LEN);
	zs.payload_len = 0;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&zs), &geo, 16, &out), PROTO_E_PAYLOAD_LEN);
	zs.encoding = PROTO_ENC_LAST + 1;
	zs.payload_len = 100;
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&zs), &geo, 16, &out), PROTO_E_ENCODING);
	/* RESYNCED: one bit per buffer the writer holds, none past the arena. */
	struct proto_desc resynced = { .type = PROTO_DESC_RESYNCED, .first_page = 1u << 20, .payload_len = 0x8001 };
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&resynced), &geo, 16, &out), PROTO_OK);
	assert_int_equal(out.first_page, 1u << 20);
	assert_int_equal(proto_desc_unpack(proto_desc_pack(&resynced), &geo, 15, &out), PROTO_E_DESC_BUFFER);
}

/* ---- RESULT ---- */

static void test_result_body(void **state)
{
	(void)state;
	uint8_t body[PROTO_RESULT_BODY_SIZE];
	uint32_t st = 99;
	proto_result_encode(PROTO_E_END_TOTALS, body);
	assert_int_equal(proto_result_decode(body, sizeof(body), &st), PROTO_OK);
	assert_int_equal(st, PROTO_E_END_TOTALS);
	proto_result_encode(PROTO_RESULT_LOCAL_FAILURE, body);
	assert_int_equal(proto_result_decode(body, sizeof(body), &st), PROTO_OK);
	proto_result_encode(5000, body);
	assert_int_equal(proto_result_decode(body, sizeof(body), &st), PROTO_E_RESULT);
	proto_result_encode(0, body);
	body[5] ^= 1; /* its CRC */
	assert_int_equal(proto_result_decode(body, sizeof(body), &st), PROTO_E_RESULT);
	proto_result_encode(0, body);
	body[0] ^= 1; /* the status under the CRC */
	assert_int_equal(proto_result_decode(body, sizeof(body), &st), PROTO_E_RESULT);
	assert_int_equal(proto_result_decode(body, 7, &st), PROTO_E_TRUNCATED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_known_vector),
		cmocka_unit_test(test_crc32c_long_and_combine),
		cmocka_unit_test(test_crc32c_every_length),
		cmocka_unit_test(test_error_messages_are_distinct),
		cmocka_unit_test(test_handshake_roundtrip),
		cmocka_unit_test(test_handshake_malformed_fields),
		cmocka_unit_test(test_handshake_mismatch),
		cmocka_unit_test(test_packet_roundtrip),
		cmocka_unit_test(test_packet_malformed_fields),
		cmocka_unit_test(test_sparse_packets),
		cmocka_unit_test(test_zstd_sparse_packets),
		cmocka_unit_test(test_device_state_header),
		cmocka_unit_test(test_descriptor_roundtrip_and_checks),
		cmocka_unit_test(test_result_body),
	};
	return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
