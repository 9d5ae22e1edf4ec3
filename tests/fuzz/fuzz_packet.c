/* libFuzzer target for what the receiver decodes from the network: the
 * channel handshake, packet headers, END and RESULT bodies, and the ring
 * descriptors a compromised receiver could hand an inflater.  Beyond "no
 * crash" it checks the promises callers rely on: a packet that decodes
 * names pages inside guest RAM, with a payload length its encoding allows.
 *
 * Input: 64 bytes of handshake, then 48-byte packet headers each followed by
 * up to 32 bytes of body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_desc.h"
#include "protocol/proto_handshake.h"
#include "protocol/proto_packet.h"

#define CHECK(cond)            \
	do {                   \
		if (!(cond))   \
			abort(); \
	} while (0)

static void check_packet(const struct proto_packet *p, const struct proto_geometry *g)
{
	/* Only page payloads carry a checksum in the header (version 3). */
	if (p->type != PROTO_PKT_DATA || p->encoding == PROTO_ENC_ZERO)
		CHECK(p->payload_crc == 0);
	if (p->type != PROTO_PKT_DATA)
		return;
	CHECK(p->n_pages >= 1 && p->n_pages <= g->max_run_pages);
	CHECK(p->first_page < g->guest_pages && p->first_page + p->n_pages <= g->guest_pages);
	uint64_t raw = (uint64_t)p->n_pages * g->page_size;
	CHECK(raw <= PROTO_MAX_RUN_BYTES);
	if (p->encoding == PROTO_ENC_RAW)
		CHECK(p->payload_len == raw);
	else if (p->encoding == PROTO_ENC_ZSTD)
		CHECK(p->payload_len >= 1 && p->payload_len < raw);
	else if (p->encoding == PROTO_ENC_SPARSE) {
		/* A bitmap, then at least one page and fewer than all. */
		uint32_t bitmap = proto_sparse_bitmap_bytes(p->n_pages);
		CHECK(p->payload_len > bitmap && (p->payload_len - bitmap) % g->page_size == 0);
		CHECK((p->payload_len - bitmap) / g->page_size < p->n_pages);
	} else
		CHECK(p->encoding == PROTO_ENC_ZERO && p->payload_len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_handshake hs;
	struct proto_geometry geo = { .page_size = 4096, .max_run_pages = 128, .guest_pages = 1024 };
	if (proto_handshake_decode(data, size, &hs) == PROTO_OK) {
		CHECK(proto_page_size_valid(hs.geo.page_size));
		CHECK(proto_run_limit_valid(hs.geo.page_size, hs.geo.max_run_pages));
		CHECK(proto_guest_pages_valid(hs.geo.page_size, hs.geo.guest_pages));
		CHECK(hs.channel_id < hs.n_channels);
		geo = hs.geo;
	}
	size_t off = size < PROTO_HANDSHAKE_SIZE ? size : PROTO_HANDSHAKE_SIZE;
	while (off < size) {
		struct proto_packet p;
		size_t left = size - off;
		enum proto_err err = proto_packet_decode(data + off, left, &geo, &p);
		if (err == PROTO_OK)
			check_packet(&p, &geo);
		size_t used = left < PROTO_PACKET_HEADER_SIZE ? left : PROTO_PACKET_HEADER_SIZE;
		off += used;
		left = size - off;
		struct proto_end_body e;
		uint32_t status;
		if (proto_end_body_decode(data + off, left, &e) == PROTO_OK) {
			CHECK(left >= PROTO_END_BODY_SIZE);
			CHECK(proto_crc32c(0, data + off, 28) == get_le32(data + off + 28));
		}
		if (proto_result_decode(data + off, left, &status) == PROTO_OK) {
			CHECK(status < _PROTO_E_MAX || status == PROTO_RESULT_LOCAL_FAILURE);
			CHECK(proto_crc32c(0, data + off, 4) == get_le32(data + off + 4));
		}
		if (left >= 16) {
			struct shm_slot s;
			memcpy(&s.w0, data + off, 8);
			memcpy(&s.w1, data + off + 8, 8);
			struct proto_desc d;
			if (proto_desc_unpack(s, &geo, 16, &d) == PROTO_OK && d.type == PROTO_DESC_RUN) {
				CHECK(d.first_page + d.n_pages <= geo.guest_pages);
				/* RAW: payload_len is the run's CRC, any value. */
				if (d.encoding == PROTO_ENC_ZERO)
					CHECK(d.payload_len == 0);
				if (d.encoding == PROTO_ENC_ZSTD)
					CHECK(d.payload_len >= 1 && d.payload_len < (uint64_t)d.n_pages * geo.page_size);
				CHECK(d.encoding != PROTO_ENC_ZSTD || d.buffer < 16);
			}
		}
		off += left < 32 ? left : 32;
	}
	return 0;
}
