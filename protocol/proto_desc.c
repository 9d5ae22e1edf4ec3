#include "protocol/proto_desc.h"

#include "protocol/proto_packet.h"

enum proto_err proto_desc_unpack(struct shm_slot slot, const struct proto_geometry *geo,
				 uint32_t n_buffers, struct proto_desc *out)
{
	struct proto_desc d = {
		.first_page = slot.w0,
		.type = (uint8_t)(slot.w1 & 0xf),
		.encoding = (uint8_t)((slot.w1 >> 4) & 0xf),
		.n_pages = (uint32_t)((slot.w1 >> 8) & 0xfff),
		.buffer = (uint16_t)((slot.w1 >> 20) & 0xfff),
		.payload_len = (uint32_t)(slot.w1 >> 32),
	};
	switch (d.type) {
	case PROTO_DESC_RUN:
		if (d.n_pages == 0 || d.n_pages > geo->max_run_pages)
			return PROTO_E_PAGE_COUNT;
		if (d.first_page >= geo->guest_pages || d.n_pages > geo->guest_pages - d.first_page)
			return PROTO_E_PAGE_OFFSET;
		if (d.encoding > PROTO_ENC_LAST)
			return PROTO_E_ENCODING;
		/* Buffers on this ring: every run that is not all zero names one. */
		if (n_buffers && d.encoding != PROTO_ENC_ZERO && d.buffer >= n_buffers)
			return PROTO_E_DESC_BUFFER;
		/* RAW, SPARSE: payload_len is a CRC, any value (proto_desc.h). */
		if ((d.encoding == PROTO_ENC_ZERO && d.payload_len != 0) ||
		    (proto_encoding_is_zstd(d.encoding) &&
		     (d.payload_len == 0 || d.payload_len >= (uint64_t)d.n_pages * geo->page_size)))
			return PROTO_E_PAYLOAD_LEN;
		break;
	case PROTO_DESC_BUFFER:
		/* A buffer coming back: only its index means anything. */
		if (d.buffer >= n_buffers)
			return PROTO_E_DESC_BUFFER;
		break;
	case PROTO_DESC_RECHECK:
		if (d.n_pages == 0 || d.n_pages > geo->max_run_pages)
			return PROTO_E_PAGE_COUNT;
		if (d.first_page >= geo->guest_pages || d.n_pages > geo->guest_pages - d.first_page)
			return PROTO_E_PAGE_OFFSET;
		break;
	case PROTO_DESC_RESYNCED:
		if (n_buffers < 32 && (d.payload_len >> n_buffers) != 0)
			return PROTO_E_DESC_BUFFER;
		break;
	case PROTO_DESC_FENCE:
	case PROTO_DESC_END:
	case PROTO_DESC_RESYNC:
	case PROTO_DESC_RECHECK_END:
	case PROTO_DESC_RECHECKED:
		break;
	default:
		return PROTO_E_DESC_TYPE;
	}
	*out = d;
	return PROTO_OK;
}
