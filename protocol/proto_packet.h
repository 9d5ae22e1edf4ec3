/* Data-channel packets: a fixed 48-byte header, then payload_len bytes.
 *
 *  off size field
 *    0  4   magic        "PFPK" (0x4b504650 little-endian)
 *    4  1   type         DATA, SYNC (end of a round on this channel), END
 *    5  1   encoding     DATA: ZERO, RAW or ZSTD; otherwise 0
 *    6  2   flags        0 (none defined yet)
 *    8  4   round        pre-copy round this packet belongs to (1-based)
 *   12  4   n_pages      DATA: 1..max_run_pages; otherwise 0
 *   16  8   first_page   DATA: index of the run's first page
 *   24  8   seq          per-channel packet sequence, from 0
 *   32  4   payload_len  DATA ZERO: 0; RAW: n_pages*page_size;
 *                        ZSTD: 1..n_pages*page_size-1; END: 32; SYNC: 0;
 *                        RESULT: 8
 *   36  4   payload_crc  crc32c of the payload (0 for an empty one)
 *   40  4   reserved     0
 *   44  4   header_crc   crc32c of bytes 0..43
 *
 * END's payload (32 bytes) carries the channel's totals:
 *    0 8 packets (DATA packets sent before END)   8 8 pages
 *   16 8 payload bytes                            24 4 crc32c over the DATA
 *   packets' header_crc values in order           28 4 reserved 0
 *
 * RESULT's payload (8 bytes): 0 4 status (0 success, else an enum proto_err,
 * or PROTO_RESULT_LOCAL_FAILURE)   4 4 reserved 0
 */
#ifndef PF_PROTO_PACKET_H
#define PF_PROTO_PACKET_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_error.h"
#include "protocol/proto_geometry.h"

#define PROTO_PACKET_MAGIC 0x4b504650u
#define PROTO_PACKET_HEADER_SIZE 48u
#define PROTO_END_BODY_SIZE 32u

enum proto_packet_type { PROTO_PKT_DATA = 1, PROTO_PKT_SYNC = 2, PROTO_PKT_END = 3, PROTO_PKT_RESULT = 4 };
#define PROTO_RESULT_BODY_SIZE 8u
#define PROTO_RESULT_LOCAL_FAILURE 0xffffu /* the receiver failed on its side */
enum proto_encoding { PROTO_ENC_ZERO = 0, PROTO_ENC_RAW = 1, PROTO_ENC_ZSTD = 2 };

struct proto_packet {
	uint8_t type;
	uint8_t encoding;
	uint32_t round;
	uint32_t n_pages;
	uint64_t first_page;
	uint64_t seq;
	uint32_t payload_len;
	uint32_t payload_crc;
};

struct proto_end_body {
	uint64_t packets;
	uint64_t pages;
	uint64_t payload_bytes;
	uint32_t crc_of_crcs;
};

void proto_packet_encode(const struct proto_packet *p, uint8_t out[PROTO_PACKET_HEADER_SIZE]);
/* Decodes and checks every field against the negotiated geometry. */
enum proto_err proto_packet_decode(const uint8_t *buf, size_t len, const struct proto_geometry *geo,
				   struct proto_packet *out);

void proto_end_body_encode(const struct proto_end_body *e, uint8_t out[PROTO_END_BODY_SIZE]);
enum proto_err proto_end_body_decode(const uint8_t *buf, size_t len, struct proto_end_body *out);
void proto_result_encode(uint32_t status, uint8_t out[PROTO_RESULT_BODY_SIZE]);
enum proto_err proto_result_decode(const uint8_t *buf, size_t len, uint32_t *status);

#endif
