#include "protocol/proto_state.h"

#include "protocol/proto_bytes.h"
#include "protocol/proto_snapfile.h"

void proto_state_header_encode(const struct proto_state_header *h, uint8_t out[PROTO_STATE_HEADER_SIZE])
{
	put_le32(out, PROTO_STATE_MAGIC);
	put_le32(out + 4, h->length);
	put_le32(out + 8, h->crc);
	put_le32(out + 12, 0);
}

enum proto_err proto_state_header_decode(const uint8_t in[PROTO_STATE_HEADER_SIZE], struct proto_state_header *out)
{
	if (get_le32(in) != PROTO_STATE_MAGIC)
		return PROTO_E_MAGIC;
	uint32_t length = get_le32(in + 4);
	if (length == 0 || length > PROTO_SNAP_STATE_MAX)
		return PROTO_E_DEVICE_STATE_LEN;
	if (get_le32(in + 12) != 0)
		return PROTO_E_RESERVED;
	*out = (struct proto_state_header){ .length = length, .crc = get_le32(in + 8) };
	return PROTO_OK;
}
