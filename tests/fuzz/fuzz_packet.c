/* libFuzzer target for what a receiver (and, for RESULT, a sender) decodes
 * from a channel after the handshake (protocol/proto_packet.h): packet
 * headers of every type and encoding, a SPARSE packet's bitmap and the walk
 * the receiver makes over it to place pages (dest/ds_net.c, place_sparse),
 * END and RESULT bodies.
 *
 * Input: flags, a 64-byte handshake, then a channel's byte stream with the
 * page bytes left out: each 48-byte header is followed by what the receiver
 * decodes of its payload and nothing else: a SPARSE or ZSTD_SPARSE packet's bitmap, END's
 * 32-byte body, RESULT's 8-byte body (ZERO, RAW and ZSTD: nothing; page
 * data is only CRC'd, and zstd frames are libzstd's to fuzz).  The
 * handshake gives the geometry packets are checked against, as on a real
 * channel; one that does not decode leaves a small default geometry, so
 * packets are still fuzzed.  A header that does not decode is skipped and
 * the next 48 bytes are tried.
 * Flags: bit 0 fix the handshake's CRC, bit 1 fix each header's CRC, bit 2
 * fix each END and RESULT body's CRC (fuzz.h says why).
 *
 * Invariants checked beyond "no crash":
 * - the decoder accepts a header, END or RESULT body exactly when a model of
 *   doc/formats.md's rules, written out here, does (so a decoder too lax or
 *   too strict is caught); next to every DATA packet it accepts, the edges
 *   of the rules (lengths, offsets, counts one off) are tried as well;
 * - a decoded DATA packet names 1..max_run_pages pages inside guest RAM, and
 *   a payload length its encoding allows; other types carry no pages, the
 *   length of their body and no payload CRC;
 * - encoding a decoded header or body gives back exactly the input bytes;
 * - a SPARSE bitmap fits the receiver's PROTO_SPARSE_BITMAP_MAX buffer, and
 *   proto_sparse_bitmap_check accepts it exactly when it has no bit past
 *   the run and as many bits as the payload length implies (an
 *   independent count, so a check that accepts too much is caught);
 * - proto_sparse_bitmap_some accepts a ZSTD_SPARSE bitmap exactly when it
 *   has no bit past the run and some but not all pages, and says how many;
 * - the receiver's walk over an accepted bitmap needs no more iovecs than
 *   its array holds, stays inside the run, and receives exactly the
 *   payload's page bytes. */
#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_handshake.h"
#include "protocol/proto_packet.h"
#include "tests/fuzz/fuzz.h"

enum { FIX_HANDSHAKE = 1, FIX_HEADER = 2, FIX_BODY = 4 };

/* dest/ds_net.c, place_sparse: the iovec array for one packet's pages. */
#define RECEIVER_SPARSE_IOV (PROTO_SPARSE_BITMAP_MAX * 4 + 1)

static void check_packet(const struct proto_packet *p, const struct proto_geometry *g)
{
	if (!proto_packet_has_payload_crc(p))
		CHECK(p->payload_crc == 0);
	if (p->type != PROTO_PKT_DATA) {
		CHECK(p->type == PROTO_PKT_SYNC || p->type == PROTO_PKT_END || p->type == PROTO_PKT_RESULT);
		CHECK(p->encoding == 0 && p->n_pages == 0 && p->first_page == 0);
		CHECK(p->payload_len == (p->type == PROTO_PKT_END	  ? PROTO_END_BODY_SIZE
					 : p->type == PROTO_PKT_RESULT ? PROTO_RESULT_BODY_SIZE
								       : 0));
		return;
	}
	CHECK(p->n_pages >= 1 && p->n_pages <= g->max_run_pages);
	CHECK(p->first_page < g->guest_pages && p->first_page + p->n_pages <= g->guest_pages);
	uint64_t raw = (uint64_t)p->n_pages * g->page_size;
	CHECK(raw <= PROTO_MAX_RUN_BYTES);
	switch (p->encoding) {
	case PROTO_ENC_ZERO:
		CHECK(p->payload_len == 0);
		break;
	case PROTO_ENC_RAW:
		CHECK(p->payload_len == raw);
		break;
	case PROTO_ENC_ZSTD:
		CHECK(p->payload_len >= 1 && p->payload_len < raw);
		break;
	case PROTO_ENC_ZSTD_SPARSE: {
		/* A bitmap, then a frame smaller than n_pages - 1 pages. */
		uint32_t bitmap = proto_sparse_bitmap_bytes(p->n_pages);
		CHECK(bitmap <= PROTO_SPARSE_BITMAP_MAX && p->n_pages >= 2);
		CHECK(p->payload_len > bitmap && p->payload_len - bitmap < raw - g->page_size);
		break;
	}
	case PROTO_ENC_SPARSE: {
		/* A bitmap, then at least one page and fewer than all. */
		uint32_t bitmap = proto_sparse_bitmap_bytes(p->n_pages);
		CHECK(bitmap <= PROTO_SPARSE_BITMAP_MAX);
		CHECK(p->payload_len > bitmap && (p->payload_len - bitmap) % g->page_size == 0);
		uint32_t present = (p->payload_len - bitmap) / g->page_size;
		CHECK(present >= 1 && present < p->n_pages);
		break;
	}
	default:
		CHECK(p->encoding <= PROTO_ENC_LAST); /* never: a decoded DATA packet has a known encoding */
	}
}

/* The receiver's walk (dest/ds_net.c, place_sparse), over a bitmap
 * proto_sparse_bitmap_check accepted: runs of data pages become iovecs
 * into guest RAM, runs of zero pages are zeroed. */
static void walk_sparse(const uint8_t *bitmap, const struct proto_packet *p, const struct proto_geometry *g,
			uint32_t present)
{
	uint64_t n_iov = 0, data_bytes = 0, zero_pages = 0;
	for (uint32_t k = 0; k < p->n_pages;) {
		int set = proto_sparse_bit(bitmap, k);
		uint32_t end = k + 1;
		while (end < p->n_pages && proto_sparse_bit(bitmap, end) == set)
			end++;
		CHECK(p->first_page + end <= g->guest_pages);
		if (set) {
			n_iov++;
			CHECK(n_iov <= RECEIVER_SPARSE_IOV);
			data_bytes += (uint64_t)(end - k) * g->page_size;
		} else
			zero_pages += end - k;
		k = end;
	}
	CHECK(data_bytes == (uint64_t)present * g->page_size);
	CHECK(data_bytes == p->payload_len - proto_sparse_bitmap_bytes(p->n_pages));
	CHECK(zero_pages + present == p->n_pages && zero_pages > 0);
}

static void check_sparse(const uint8_t *bitmap, const struct proto_packet *p, const struct proto_geometry *g)
{
	uint32_t bytes = proto_sparse_bitmap_bytes(p->n_pages);
	uint32_t present = (p->payload_len - bytes) / g->page_size;
	uint32_t inside = 0, outside = 0;
	for (uint32_t k = 0; k < bytes * 8; k++) {
		if ((bitmap[k / 8] >> (k % 8)) & 1) {
			if (k < p->n_pages)
				inside++;
			else
				outside++;
		}
	}
	enum proto_err err = proto_sparse_bitmap_check(bitmap, p->n_pages, present);
	CHECK((err == PROTO_OK) == (outside == 0 && inside == present));
	CHECK(err == PROTO_OK || err == PROTO_E_SPARSE_BITMAP);
	if (err == PROTO_OK)
		walk_sparse(bitmap, p, g, present);
}

/* A ZSTD_SPARSE bitmap: accepted exactly when no bit is past the run and
 * some pages but not all are set, counted independently. */
static void check_zstd_sparse(const uint8_t *bitmap, const struct proto_packet *p)
{
	uint32_t bytes = proto_sparse_bitmap_bytes(p->n_pages), inside = 0, outside = 0, present = 0;
	for (uint32_t k = 0; k < bytes * 8; k++)
		if ((bitmap[k / 8] >> (k % 8)) & 1)
			*(k < p->n_pages ? &inside : &outside) += 1;
	enum proto_err err = proto_sparse_bitmap_some(bitmap, p->n_pages, &present);
	CHECK((err == PROTO_OK) == (outside == 0 && inside >= 1 && inside < p->n_pages));
	CHECK(err == PROTO_OK || err == PROTO_E_SPARSE_BITMAP);
	if (err == PROTO_OK)
		CHECK(present == inside);
}

/* Bitmaps at the edges of the rule, next to a SPARSE packet the decoder
 * accepted and whatever the input's bitmap: the right count, one bit more
 * or less, the right count with one bit past the run, every page; for the
 * packet's run length and for shorter ones that end inside a bitmap word. */
static void probe_bitmaps(const struct proto_packet *p, const struct proto_geometry *g)
{
	static uint8_t bitmap[PROTO_SPARSE_BITMAP_MAX];
	const uint32_t lengths[] = { p->n_pages, p->n_pages - 1, p->n_pages - 63 };
	for (unsigned l = 0; l < sizeof(lengths) / sizeof(lengths[0]); l++) {
		struct proto_packet q = *p;
		uint32_t n = q.n_pages = lengths[l], bytes = proto_sparse_bitmap_bytes(n);
		if (n < 2 || n > p->n_pages)
			continue;
		uint32_t present = (p->payload_len - proto_sparse_bitmap_bytes(p->n_pages)) / g->page_size;
		if (present > n - 1)
			present = n - 1;
		q.payload_len = bytes + present * g->page_size;
		for (unsigned k = 0; k < 5; k++) {
			uint32_t set = k == 1 ? present + 1 : k == 2 || k == 3 ? present - 1 : k == 4 ? n : present;
			memset(bitmap, 0, bytes);
			for (uint32_t b = 0; b < set && b < n; b++) /* the last pages */
				bitmap[(n - 1 - b) / 8] |= (uint8_t)(1u << ((n - 1 - b) % 8));
			if (k == 3) {
				if (n % 64 == 0)
					continue;
				bitmap[n / 8] |= (uint8_t)(1u << (n % 8)); /* the first bit past the run */
			}
			check_sparse(bitmap, &q, g);
		}
	}
}

static void check_end(uint8_t *body, size_t len, uint8_t flags)
{
	if (flags & FIX_BODY && len >= PROTO_END_BODY_SIZE)
		put_le32(body + 28, proto_crc32c(0, body, 28));
	struct proto_end_body e;
	enum proto_err err = proto_end_body_decode(body, len, &e);
	if (len < PROTO_END_BODY_SIZE)
		CHECK(err == PROTO_E_TRUNCATED);
	else
		CHECK((err == PROTO_OK) == (get_le32(body + 28) == proto_crc32c(0, body, 28)));
	if (err != PROTO_OK)
		return;
	uint8_t again[PROTO_END_BODY_SIZE];
	proto_end_body_encode(&e, again);
	CHECK(memcmp(again, body, sizeof(again)) == 0);
}

static int model_result(const uint8_t *body)
{
	uint32_t status = get_le32(body);
	return get_le32(body + 4) == proto_crc32c(0, body, 4) &&
	       (status < _PROTO_E_MAX || status == PROTO_RESULT_LOCAL_FAILURE);
}

static void check_result(uint8_t *body, size_t len, uint8_t flags)
{
	if (flags & FIX_BODY && len >= PROTO_RESULT_BODY_SIZE)
		put_le32(body + 4, proto_crc32c(0, body, 4));
	uint32_t status = 0;
	enum proto_err err = proto_result_decode(body, len, &status);
	if (len < PROTO_RESULT_BODY_SIZE)
		CHECK(err == PROTO_E_TRUNCATED);
	else
		CHECK((err == PROTO_OK) == model_result(body));
	if (err != PROTO_OK)
		return;
	/* The edges of the status range, which mutation rarely lands on. */
	const uint32_t edges[] = { _PROTO_E_MAX - 1, _PROTO_E_MAX, PROTO_RESULT_LOCAL_FAILURE - 1,
				   PROTO_RESULT_LOCAL_FAILURE, PROTO_RESULT_LOCAL_FAILURE + 1, UINT32_MAX };
	for (unsigned k = 0; k < sizeof(edges) / sizeof(edges[0]); k++) {
		uint8_t edge[PROTO_RESULT_BODY_SIZE];
		uint32_t st;
		proto_result_encode(edges[k], edge);
		CHECK((proto_result_decode(edge, sizeof(edge), &st) == PROTO_OK) == model_result(edge));
	}
	/* Both ends print it: it must name a reason. */
	CHECK(status < _PROTO_E_MAX || status == PROTO_RESULT_LOCAL_FAILURE);
	if (status < _PROTO_E_MAX)
		CHECK(proto_strerror((enum proto_err)status) != NULL);
	uint8_t again[PROTO_RESULT_BODY_SIZE];
	proto_result_encode(status, again);
	CHECK(memcmp(again, body, sizeof(again)) == 0);
}

/* What doc/formats.md says a header may be, written out independently of
 * proto_packet_decode: the decoder must accept exactly these. */
static int model_header(const uint8_t *b, const struct proto_geometry *g)
{
	if (get_le32(b) != PROTO_PACKET_MAGIC || get_le32(b + 44) != proto_crc32c(0, b, 44))
		return 0;
	if (get_le16(b + 6) != 0 || get_le32(b + 40) != 0)
		return 0;
	uint8_t type = b[4], enc = b[5];
	uint32_t n = get_le32(b + 12), len = get_le32(b + 32), crc = get_le32(b + 36);
	uint64_t first = get_le64(b + 16);
	if (type == PROTO_PKT_SYNC || type == PROTO_PKT_END || type == PROTO_PKT_RESULT) {
		uint32_t body = type == PROTO_PKT_END ? 32 : type == PROTO_PKT_RESULT ? 8 : 0;
		return enc == 0 && n == 0 && first == 0 && len == body && crc == 0;
	}
	if (type != PROTO_PKT_DATA || n < 1 || n > g->max_run_pages)
		return 0;
	if ((unsigned __int128)first + n > g->guest_pages)
		return 0;
	uint64_t raw = (uint64_t)n * g->page_size, bitmap = (n + 63) / 64 * 8;
	switch (enc) {
	case PROTO_ENC_ZERO:
		return len == 0 && crc == 0;
	case PROTO_ENC_RAW:
		return len == raw;
	case PROTO_ENC_ZSTD:
		return len >= 1 && len < raw;
	case PROTO_ENC_SPARSE:
		return len > bitmap && (len - bitmap) % g->page_size == 0 && (len - bitmap) / g->page_size < n;
	case PROTO_ENC_ZSTD_SPARSE:
		return len > bitmap && len - bitmap < raw - g->page_size;
	default:
		return 0;
	}
}

static void check_header(const uint8_t header[PROTO_PACKET_HEADER_SIZE], const struct proto_geometry *g,
			 struct proto_packet *p, enum proto_err *err)
{
	*err = proto_packet_decode(header, PROTO_PACKET_HEADER_SIZE, g, p);
	CHECK((*err == PROTO_OK) == model_header(header, g));
	if (*err != PROTO_OK)
		return;
	check_packet(p, g);
	uint8_t again[PROTO_PACKET_HEADER_SIZE];
	proto_packet_encode(p, again);
	CHECK(memcmp(again, header, sizeof(again)) == 0);
}

/* The edges of what the decoder accepts lie next to every packet it
 * accepts; random mutation rarely lands on them (a payload length of
 * exactly bitmap + n_pages * page_size, a run ending one page past the
 * guest), so try them around each one. */
static void probe_edges(const struct proto_packet *p, const struct proto_geometry *g)
{
	uint64_t raw = (uint64_t)p->n_pages * g->page_size, bitmap = proto_sparse_bitmap_bytes(p->n_pages);
	const uint64_t lens[] = { 0, 1, raw - 1, raw, raw + 1, bitmap, bitmap + 1, bitmap + g->page_size,
				  bitmap + raw - g->page_size - 1, bitmap + raw - g->page_size, bitmap + raw, 32, 8 };
	const uint64_t firsts[] = { 0, g->guest_pages - p->n_pages, g->guest_pages - p->n_pages + 1,
				    g->guest_pages, UINT64_MAX };
	const uint32_t counts[] = { 0, 1, g->max_run_pages, g->max_run_pages + 1, UINT32_MAX };
	enum { N_LENS = 13, N_FIRSTS = 5, N_COUNTS = 5, N_ENCODINGS = PROTO_ENC_LAST + 2 };
	for (unsigned k = 0; k < N_LENS + N_FIRSTS + N_COUNTS + N_ENCODINGS + 1; k++) {
		struct proto_packet q = *p, out;
		unsigned j = k;
		if (j < N_LENS)
			q.payload_len = (uint32_t)lens[j];
		else if ((j -= N_LENS) < N_FIRSTS)
			q.first_page = firsts[j];
		else if ((j -= N_FIRSTS) < N_COUNTS)
			q.n_pages = counts[j];
		else if ((j -= N_COUNTS) < N_ENCODINGS)
			q.encoding = (uint8_t)j;
		else
			q.payload_crc = 0;
		uint8_t header[PROTO_PACKET_HEADER_SIZE];
		proto_packet_encode(&q, header);
		enum proto_err err;
		check_header(header, g, &out, &err);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t body[PROTO_SPARSE_BITMAP_MAX];
	if (size < 1 + PROTO_HANDSHAKE_SIZE)
		return 0;
	uint8_t flags = data[0];
	data++, size--;
	struct proto_geometry geo = { .page_size = PROTO_PAGE_4K, .max_run_pages = 128, .guest_pages = 1024 };
	uint8_t hs_buf[PROTO_HANDSHAKE_SIZE];
	memcpy(hs_buf, data, sizeof(hs_buf));
	if (flags & FIX_HANDSHAKE)
		put_le32(hs_buf + 60, proto_crc32c(0, hs_buf, 60));
	struct proto_handshake hs;
	if (proto_handshake_decode(hs_buf, sizeof(hs_buf), &hs) == PROTO_OK)
		geo = hs.geo;

	size_t off = PROTO_HANDSHAKE_SIZE;
	while (size - off >= PROTO_PACKET_HEADER_SIZE) {
		uint8_t header[PROTO_PACKET_HEADER_SIZE];
		memcpy(header, data + off, sizeof(header));
		off += sizeof(header);
		if (flags & FIX_HEADER)
			put_le32(header + 44, proto_crc32c(0, header, 44));
		struct proto_packet p;
		enum proto_err err;
		CHECK(proto_packet_decode(header, sizeof(header) - 1, &geo, &p) == PROTO_E_TRUNCATED);
		check_header(header, &geo, &p, &err);
		if (err != PROTO_OK)
			continue;
		if (p.type == PROTO_PKT_DATA)
			probe_edges(&p, &geo);

		/* What of the payload the receiver decodes, as far as the input
		 * holds it (a short one is still decoded: truncation is a case). */
		size_t want = p.type == PROTO_PKT_END	       ? PROTO_END_BODY_SIZE
			      : p.type == PROTO_PKT_RESULT     ? PROTO_RESULT_BODY_SIZE
			      : proto_encoding_has_bitmap(p.encoding) ? proto_sparse_bitmap_bytes(p.n_pages)
							       : 0;
		size_t got = size - off < want ? size - off : want;
		memcpy(body, data + off, got);
		off += got;
		if (p.type == PROTO_PKT_END)
			check_end(body, got, flags);
		else if (p.type == PROTO_PKT_RESULT)
			check_result(body, got, flags);
		else if (p.encoding == PROTO_ENC_SPARSE) {
			if (got == want)
				check_sparse(body, &p, &geo);
			probe_bitmaps(&p, &geo);
		} else if (p.encoding == PROTO_ENC_ZSTD_SPARSE && got == want) {
			check_zstd_sparse(body, &p);
		}
	}
	return 0;
}
