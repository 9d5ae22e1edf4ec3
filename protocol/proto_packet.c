#include "protocol/proto_packet.h"

#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"

void proto_packet_encode(const struct proto_packet *p, uint8_t out[PROTO_PACKET_HEADER_SIZE])
{
	memset(out, 0, PROTO_PACKET_HEADER_SIZE);
	put_le32(out + 0, PROTO_PACKET_MAGIC);
	out[4] = p->type;
	out[5] = p->encoding;
	put_le32(out + 8, p->round);
	put_le32(out + 12, p->n_pages);
	put_le64(out + 16, p->first_page);
	put_le64(out + 24, p->seq);
	put_le32(out + 32, p->payload_len);
	put_le32(out + 36, p->payload_crc);
	put_le32(out + 44, proto_crc32c(0, out, 44));
}

static enum proto_err check_data(const struct proto_packet *p, const struct proto_geometry *geo)
{
	if (p->n_pages == 0 || p->n_pages > geo->max_run_pages)
		return PROTO_E_PAGE_COUNT;
	/* first_page + n_pages cannot overflow: n_pages is bounded above. */
	if (p->first_page >= geo->guest_pages || p->n_pages > geo->guest_pages - p->first_page)
		return PROTO_E_PAGE_OFFSET;
	uint64_t raw = (uint64_t)p->n_pages * geo->page_size;
	switch (p->encoding) {
	case PROTO_ENC_ZERO:
		return p->payload_len == 0 ? PROTO_OK : PROTO_E_PAYLOAD_LEN;
	case PROTO_ENC_RAW:
		return p->payload_len == raw ? PROTO_OK : PROTO_E_PAYLOAD_LEN;
	case PROTO_ENC_ZSTD:
		/* A run that does not shrink is sent raw, so a frame is never as
		 * large as its pages. */
		return p->payload_len >= 1 && p->payload_len < raw ? PROTO_OK : PROTO_E_PAYLOAD_LEN;
	case PROTO_ENC_SPARSE: {
		/* All pages present would be RAW, none ZERO. */
		uint32_t bitmap = proto_sparse_bitmap_bytes(p->n_pages);
		if (p->payload_len <= bitmap || (p->payload_len - bitmap) % geo->page_size)
			return PROTO_E_PAYLOAD_LEN;
		return (p->payload_len - bitmap) / geo->page_size < p->n_pages ? PROTO_OK : PROTO_E_PAYLOAD_LEN;
	}
	case PROTO_ENC_ZSTD_SPARSE: {
		/* At most n_pages - 1 pages present, and the frame smaller. */
		uint32_t bitmap = proto_sparse_bitmap_bytes(p->n_pages);
		if (p->payload_len <= bitmap || p->payload_len - bitmap >= raw - geo->page_size)
			return PROTO_E_PAYLOAD_LEN;
		return PROTO_OK;
	}
	default:
		return PROTO_E_ENCODING;
	}
}

enum proto_err proto_packet_decode(const uint8_t *buf, size_t len, const struct proto_geometry *geo,
				   struct proto_packet *out)
{
	if (len < PROTO_PACKET_HEADER_SIZE)
		return PROTO_E_TRUNCATED;
	if (get_le32(buf) != PROTO_PACKET_MAGIC)
		return PROTO_E_MAGIC;
	if (get_le32(buf + 44) != proto_crc32c(0, buf, 44))
		return PROTO_E_HEADER_CHECKSUM;
	if (get_le16(buf + 6) != 0)
		return PROTO_E_FLAGS;
	if (get_le32(buf + 40) != 0)
		return PROTO_E_RESERVED;

	struct proto_packet p = {
		.type = buf[4],
		.encoding = buf[5],
		.round = get_le32(buf + 8),
		.n_pages = get_le32(buf + 12),
		.first_page = get_le64(buf + 16),
		.seq = get_le64(buf + 24),
		.payload_len = get_le32(buf + 32),
		.payload_crc = get_le32(buf + 36),
	};
	enum proto_err err;
	switch (p.type) {
	case PROTO_PKT_DATA:
		err = check_data(&p, geo);
		break;
	case PROTO_PKT_SYNC:
	case PROTO_PKT_END:
	case PROTO_PKT_RESULT:
		if (p.encoding != 0)
			err = PROTO_E_ENCODING;
		else if (p.n_pages != 0)
			err = PROTO_E_PAGE_COUNT;
		else if (p.first_page != 0)
			err = PROTO_E_PAGE_OFFSET;
		else if (p.payload_len != (p.type == PROTO_PKT_END	 ? PROTO_END_BODY_SIZE
					   : p.type == PROTO_PKT_RESULT ? PROTO_RESULT_BODY_SIZE
									: 0))
			err = PROTO_E_PAYLOAD_LEN;
		else
			err = PROTO_OK;
		break;
	default:
		err = PROTO_E_PACKET_TYPE;
	}
	/* Only page payloads carry a checksum here; END and RESULT bodies
	 * carry their own. */
	if (err == PROTO_OK && !proto_packet_has_payload_crc(&p) && p.payload_crc != 0)
		err = PROTO_E_RESERVED;
	if (err == PROTO_OK)
		*out = p;
	return err;
}

/* The bits set, or -1 for a bit past n_pages. */
static int64_t bitmap_count(const uint8_t *bitmap, uint32_t n_pages)
{
	uint32_t words = proto_sparse_bitmap_bytes(n_pages) / 8, set = 0;
	for (uint32_t k = 0; k < words; k++) {
		uint64_t w = get_le64(bitmap + 8 * k);
		uint32_t valid = n_pages - 64 * k < 64 ? n_pages - 64 * k : 64;
		if (valid < 64 && (w >> valid))
			return -1;
		set += (uint32_t)__builtin_popcountll(w);
	}
	return set;
}

enum proto_err proto_sparse_bitmap_check(const uint8_t *bitmap, uint32_t n_pages, uint32_t present)
{
	return bitmap_count(bitmap, n_pages) == present ? PROTO_OK : PROTO_E_SPARSE_BITMAP;
}

enum proto_err proto_sparse_bitmap_some(const uint8_t *bitmap, uint32_t n_pages, uint32_t *present)
{
	int64_t set = bitmap_count(bitmap, n_pages);
	if (set <= 0 || set >= n_pages)
		return PROTO_E_SPARSE_BITMAP;
	*present = (uint32_t)set;
	return PROTO_OK;
}

void proto_end_body_encode(const struct proto_end_body *e, uint8_t out[PROTO_END_BODY_SIZE])
{
	memset(out, 0, PROTO_END_BODY_SIZE);
	put_le64(out + 0, e->packets);
	put_le64(out + 8, e->pages);
	put_le64(out + 16, e->payload_bytes);
	put_le32(out + 24, e->crc_of_crcs);
	put_le32(out + 28, proto_crc32c(0, out, 28));
}

enum proto_err proto_end_body_decode(const uint8_t *buf, size_t len, struct proto_end_body *out)
{
	if (len < PROTO_END_BODY_SIZE)
		return PROTO_E_TRUNCATED;
	if (get_le32(buf + 28) != proto_crc32c(0, buf, 28))
		return PROTO_E_PAYLOAD_CHECKSUM;
	out->packets = get_le64(buf + 0);
	out->pages = get_le64(buf + 8);
	out->payload_bytes = get_le64(buf + 16);
	out->crc_of_crcs = get_le32(buf + 24);
	return PROTO_OK;
}

void proto_result_encode(uint32_t status, uint8_t out[PROTO_RESULT_BODY_SIZE])
{
	put_le32(out, status);
	put_le32(out + 4, proto_crc32c(0, out, 4));
}

void proto_result_packet_encode(uint32_t status, uint8_t out[PROTO_RESULT_PACKET_SIZE])
{
	struct proto_packet p = { .type = PROTO_PKT_RESULT, .payload_len = PROTO_RESULT_BODY_SIZE };
	proto_packet_encode(&p, out);
	proto_result_encode(status, out + PROTO_PACKET_HEADER_SIZE);
}

enum proto_err proto_result_decode(const uint8_t *buf, size_t len, uint32_t *status)
{
	if (len < PROTO_RESULT_BODY_SIZE)
		return PROTO_E_TRUNCATED;
	if (get_le32(buf + 4) != proto_crc32c(0, buf, 4))
		return PROTO_E_RESULT;
	uint32_t st = get_le32(buf);
	if (st >= _PROTO_E_MAX && st != PROTO_RESULT_LOCAL_FAILURE)
		return PROTO_E_RESULT;
	*status = st;
	return PROTO_OK;
}
