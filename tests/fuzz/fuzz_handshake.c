/* libFuzzer target for the 64-byte channel handshake (protocol/
 * proto_handshake.h): the first bytes a receiver reads from anyone who
 * connects (with --insecure in the clear, otherwise inside TLS), and the
 * answer a sender reads back.  Two handshakes per input, as the code meets
 * them: a main-channel offer and then a data-channel offer matched against
 * it (dest/ds_session.c), or a sender's offer and the receiver's answer
 * (net/net_channel.c).
 *
 * Invariants checked beyond "no crash":
 * - the decoder accepts exactly what a model of doc/formats.md's rules,
 *   written out here, accepts;
 * - a decoded handshake has every field in range, and its channel id can
 *   index the receiver's PROTO_MAX_CHANNELS channel table;
 * - guest_pages * page_size cannot overflow (the receiver multiplies them);
 * - encoding a decoded handshake gives back exactly the input bytes (the
 *   format has no slack: reserved bytes zero, CRC over the rest);
 * - a refused version reports the version the peer sent;
 * - the refusal a receiver answers a bad offer with decodes, with the
 *   reason, at the sender;
 * - matching is an equivalence: h matches itself, a matches b iff b
 *   matches a, and a match means equal session, geometry, channel count
 *   and features; each of those changed alone breaks it, channel kind,
 *   id and status do not.
 *
 * Input: flags (bit 0: fix the first handshake's CRC, bit 1: the second's),
 * then up to two 64-byte handshakes. */
#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_handshake.h"
#include "protocol/proto_state.h"
#include "tests/fuzz/fuzz.h"

/* The receiver answers an offer it refuses with a placeholder handshake
 * carrying the reason (net/net_channel.c, net_channel_answer): the sender
 * must be able to decode it and read the reason back. */
static void check_refusal(enum proto_err why)
{
	struct proto_handshake reply = {
		.geo = { .page_size = PROTO_PAGE_4K, .max_run_pages = 1, .guest_pages = 1 },
		.n_channels = 1,
		.status = (uint16_t)why,
	}, back;
	uint8_t buf[PROTO_HANDSHAKE_SIZE];
	proto_handshake_encode(&reply, buf);
	CHECK(proto_handshake_decode(buf, sizeof(buf), &back) == PROTO_OK && back.status == why);
}

/* What doc/formats.md says a handshake may be, written out independently
 * of proto_handshake_decode: the decoder must accept exactly these. */
static int model_handshake(const uint8_t *b)
{
	if (get_le32(b) != PROTO_HANDSHAKE_MAGIC || get_le16(b + 4) != PROTO_VERSION ||
	    get_le32(b + 60) != proto_crc32c(0, b, 60))
		return 0;
	for (int k = 48; k < 60; k++)
		if (b[k])
			return 0;
	uint8_t kind = b[6], id = b[7];
	uint32_t page = get_le32(b + 24), run = get_le32(b + 28);
	uint64_t guest = get_le64(b + 32);
	uint16_t channels = get_le16(b + 40), status = get_le16(b + 42);
	if (kind > 1 || channels < 1 || channels > 64 || id >= channels || (kind == 0 && id != 0))
		return 0;
	if (page != 4096 && page != 2u << 20)
		return 0;
	if (run < 1 || run > 4095 || (uint64_t)run * page > 4u << 20)
		return 0;
	if (guest < 1 || (unsigned __int128)guest * page > (unsigned __int128)1 << 46)
		return 0;
	return (get_le32(b + 44) & ~(uint32_t)PROTO_F_KNOWN) == 0 && status < _PROTO_E_MAX;
}

/* Every field a match compares, changed alone, must break the match;
 * the fields it leaves alone (kind, id, status) must not. */
static void probe_match(const struct proto_handshake *a)
{
	for (unsigned k = 0; k < 12; k++) {
		struct proto_handshake b = *a;
		switch (k) {
		case 0: b.session_id[0] ^= 1; break;
		case 1: b.session_id[15] ^= 0x80; break;
		case 2: b.geo.page_size = a->geo.page_size == PROTO_PAGE_4K ? PROTO_PAGE_2M : PROTO_PAGE_4K; break;
		case 3: b.geo.max_run_pages ^= 1; break;
		case 4: b.geo.guest_pages ^= 1; break;
		case 5: b.n_channels ^= 1; break;
		case 6: b.features ^= PROTO_F_ZSTD; break;
		case 7: b.features ^= PROTO_F_ROUNDS; break;
		case 8: b.channel_kind ^= 1; break;
		case 9: b.channel_id ^= 1; break;
		case 10: b.status ^= 1; break;
		default: b.version ^= 1; break;
		}
		enum proto_err ab = proto_handshake_match(a, &b), ba = proto_handshake_match(&b, a);
		CHECK(ab == ba);
		CHECK((ab == PROTO_OK) == (k >= 8));
	}
}

static enum proto_err decode(const uint8_t *in, size_t len, int fix, struct proto_handshake *h);

/* Each field of a decoded handshake at the edge of its range, which
 * mutation seldom lands on exactly. */
static void probe_fields(const struct proto_handshake *h)
{
	uint32_t max_run = PROTO_MAX_RUN_BYTES / h->geo.page_size;
	for (unsigned k = 0; k < 16; k++) {
		struct proto_handshake v = *h;
		switch (k) {
		case 0: v.status = _PROTO_E_MAX - 1; break;
		case 1: v.status = _PROTO_E_MAX; break;
		case 2: v.n_channels = PROTO_MAX_CHANNELS; break;
		case 3: v.n_channels = PROTO_MAX_CHANNELS + 1; break;
		case 4: v.channel_id = (uint8_t)(v.n_channels - 1); break;
		case 5: v.channel_id = (uint8_t)v.n_channels; break;
		case 6: v.channel_kind = 2; break;
		case 7: v.geo.max_run_pages = max_run > 4095 ? 4095 : max_run; break;
		case 8: v.geo.max_run_pages = max_run + 1; break;
		case 9: v.geo.max_run_pages = 0; break;
		case 10: v.geo.guest_pages = PROTO_MAX_GUEST_BYTES / v.geo.page_size; break;
		case 11: v.geo.guest_pages = PROTO_MAX_GUEST_BYTES / v.geo.page_size + 1; break;
		case 12: v.geo.guest_pages = 0; break;
		case 13: v.geo.page_size = 8192; break;
		case 14: v.features = PROTO_F_KNOWN; break;
		default: v.features |= 0x80000002u & ~(uint32_t)PROTO_F_KNOWN; break;
		}
		uint8_t buf[PROTO_HANDSHAKE_SIZE];
		struct proto_handshake out;
		proto_handshake_encode(&v, buf);
		decode(buf, sizeof(buf), 0, &out); /* against the model */
	}
}

static enum proto_err decode(const uint8_t *in, size_t len, int fix, struct proto_handshake *h)
{
	uint8_t buf[PROTO_HANDSHAKE_SIZE] = { 0 };
	memcpy(buf, in, len < sizeof(buf) ? len : sizeof(buf));
	if (fix)
		put_le32(buf + 60, proto_crc32c(0, buf, 60));
	memset(h, 0, sizeof(*h));
	enum proto_err err = proto_handshake_decode(buf, len, h);
	if (len < PROTO_HANDSHAKE_SIZE) {
		CHECK(err == PROTO_E_TRUNCATED);
		return err;
	}
	CHECK((err == PROTO_OK) == model_handshake(buf));
	if (err == PROTO_E_VERSION)
		CHECK(h->version == get_le16(buf + 4) && h->version != PROTO_VERSION);
	if (err != PROTO_OK) {
		check_refusal(err);
		return err;
	}
	CHECK(h->version == PROTO_VERSION);
	CHECK(h->channel_kind == PROTO_CHAN_MAIN || h->channel_kind == PROTO_CHAN_DATA);
	CHECK(h->n_channels >= 1 && h->n_channels <= PROTO_MAX_CHANNELS);
	CHECK(h->channel_id < h->n_channels && h->channel_id < PROTO_MAX_CHANNELS);
	CHECK(h->channel_kind == PROTO_CHAN_DATA || h->channel_id == 0);
	CHECK(proto_page_size_valid(h->geo.page_size));
	CHECK(proto_run_limit_valid(h->geo.page_size, h->geo.max_run_pages));
	CHECK(h->geo.guest_pages >= 1 && h->geo.guest_pages <= PROTO_MAX_GUEST_BYTES / h->geo.page_size);
	CHECK(!(h->features & ~PROTO_F_KNOWN));
	CHECK(h->status < _PROTO_E_MAX);
	CHECK(proto_strerror((enum proto_err)h->status) != NULL);
	uint8_t again[PROTO_HANDSHAKE_SIZE];
	proto_handshake_encode(h, again);
	CHECK(memcmp(again, buf, sizeof(buf)) == 0);
	probe_match(h);
	return err;
}

static enum proto_err decode_input(const uint8_t *in, size_t len, int fix, struct proto_handshake *h)
{
	enum proto_err err = decode(in, len, fix, h);
	if (err == PROTO_OK)
		probe_fields(h);
	return err;
}

static void check_match(const struct proto_handshake *a, const struct proto_handshake *b)
{
	CHECK(proto_handshake_match(a, a) == PROTO_OK);
	enum proto_err ab = proto_handshake_match(a, b), ba = proto_handshake_match(b, a);
	CHECK((ab == PROTO_OK) == (ba == PROTO_OK));
	if (ab != PROTO_OK)
		return;
	CHECK(memcmp(a->session_id, b->session_id, sizeof(a->session_id)) == 0);
	CHECK(a->geo.page_size == b->geo.page_size && a->geo.max_run_pages == b->geo.max_run_pages &&
	      a->geo.guest_pages == b->geo.guest_pages);
	CHECK(a->n_channels == b->n_channels && a->features == b->features);
	/* A data channel the receiver accepts lands inside its table: the
	 * id was checked against the main channel's channel count. */
	if (a->channel_kind == PROTO_CHAN_MAIN && b->channel_kind == PROTO_CHAN_DATA)
		CHECK(b->channel_id < a->n_channels);
}

/* The device state header that follows the main handshake with
 * PROTO_F_DEVICE_STATE (protocol/proto_state.h), against doc/formats.md. */
static void check_state_header(const uint8_t *b)
{
	struct proto_state_header h;
	enum proto_err err = proto_state_header_decode(b, &h);
	uint32_t len = get_le32(b + 4);
	int valid = get_le32(b) == PROTO_STATE_MAGIC && len >= 1 && len <= 64u << 20 && get_le32(b + 12) == 0;
	CHECK((err == PROTO_OK) == valid);
	if (valid) {
		CHECK(h.length == len && h.crc == get_le32(b + 8));
		uint8_t again[PROTO_STATE_HEADER_SIZE];
		proto_state_header_encode(&h, again);
		CHECK(memcmp(again, b, sizeof(again)) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	data++, size--;
	if (size >= PROTO_STATE_HEADER_SIZE)
		check_state_header(data);
	struct proto_handshake a, b;
	size_t la = size < PROTO_HANDSHAKE_SIZE ? size : PROTO_HANDSHAKE_SIZE;
	enum proto_err ea = decode_input(data, la, flags & 1, &a);
	if (size <= PROTO_HANDSHAKE_SIZE)
		return 0;
	size_t lb = size - la < PROTO_HANDSHAKE_SIZE ? size - la : PROTO_HANDSHAKE_SIZE;
	enum proto_err eb = decode_input(data + la, lb, flags & 2, &b);
	if (ea == PROTO_OK && eb == PROTO_OK)
		check_match(&a, &b);
	return 0;
}
