#include "protocol/proto_handshake.h"

#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"

void proto_handshake_encode(const struct proto_handshake *h, uint8_t out[PROTO_HANDSHAKE_SIZE])
{
	memset(out, 0, PROTO_HANDSHAKE_SIZE);
	put_le32(out + 0, PROTO_HANDSHAKE_MAGIC);
	put_le16(out + 4, PROTO_VERSION);
	out[6] = h->channel_kind;
	out[7] = h->channel_id;
	memcpy(out + 8, h->session_id, 16);
	put_le32(out + 24, h->geo.page_size);
	put_le32(out + 28, h->geo.max_run_pages);
	put_le64(out + 32, h->geo.guest_pages);
	put_le16(out + 40, h->n_channels);
	put_le16(out + 42, h->status);
	put_le32(out + 44, h->features);
	put_le32(out + 60, proto_crc32c(0, out, 60));
}

enum proto_err proto_handshake_decode(const uint8_t *buf, size_t len, struct proto_handshake *out)
{
	if (len < PROTO_HANDSHAKE_SIZE)
		return PROTO_E_TRUNCATED;
	if (get_le32(buf) != PROTO_HANDSHAKE_MAGIC)
		return PROTO_E_MAGIC;
	if (get_le16(buf + 4) != PROTO_VERSION) {
		out->version = get_le16(buf + 4);
		return PROTO_E_VERSION;
	}
	if (get_le32(buf + 60) != proto_crc32c(0, buf, 60))
		return PROTO_E_HEADER_CHECKSUM;
	if (!all_zero(buf + 48, 12))
		return PROTO_E_RESERVED;

	struct proto_handshake h;
	h.channel_kind = buf[6];
	h.channel_id = buf[7];
	memcpy(h.session_id, buf + 8, 16);
	h.geo.page_size = get_le32(buf + 24);
	h.geo.max_run_pages = get_le32(buf + 28);
	h.geo.guest_pages = get_le64(buf + 32);
	h.n_channels = get_le16(buf + 40);
	h.features = get_le32(buf + 44);
	h.status = get_le16(buf + 42);
	h.version = PROTO_VERSION;

	if (h.channel_kind != PROTO_CHAN_MAIN && h.channel_kind != PROTO_CHAN_DATA)
		return PROTO_E_CHANNEL_KIND;
	if (h.n_channels < 1 || h.n_channels > PROTO_MAX_CHANNELS)
		return PROTO_E_CHANNEL_COUNT;
	if (h.channel_id >= h.n_channels || (h.channel_kind == PROTO_CHAN_MAIN && h.channel_id != 0))
		return PROTO_E_CHANNEL_ID;
	if (!proto_page_size_valid(h.geo.page_size))
		return PROTO_E_PAGE_SIZE;
	if (!proto_run_limit_valid(h.geo.page_size, h.geo.max_run_pages))
		return PROTO_E_RUN_LIMIT;
	if (!proto_guest_pages_valid(h.geo.page_size, h.geo.guest_pages))
		return PROTO_E_GUEST_SIZE;
	if (h.features & ~PROTO_F_KNOWN)
		return PROTO_E_FEATURES;
	if (h.status >= _PROTO_E_MAX)
		return PROTO_E_STATUS;
	*out = h;
	return PROTO_OK;
}

enum proto_err proto_handshake_match(const struct proto_handshake *peer,
				     const struct proto_handshake *ours)
{
	if (memcmp(peer->session_id, ours->session_id, sizeof(ours->session_id)) != 0)
		return PROTO_E_SESSION;
	if (peer->geo.page_size != ours->geo.page_size)
		return PROTO_E_PAGE_SIZE;
	if (peer->geo.guest_pages != ours->geo.guest_pages)
		return PROTO_E_GUEST_SIZE;
	if (peer->geo.max_run_pages != ours->geo.max_run_pages)
		return PROTO_E_RUN_LIMIT;
	if (peer->n_channels != ours->n_channels)
		return PROTO_E_CHANNEL_COUNT;
	if (peer->features != ours->features)
		return PROTO_E_FEATURES;
	return PROTO_OK;
}
