/* Data-channel packets: a fixed 48-byte header, then payload_len bytes.
 *
 *  off size field
 *    0  4   magic        "PFPK" (0x4b504650 little-endian)
 *    4  1   type         DATA, SYNC (end of a round on this channel), END
 *    5  1   encoding     DATA: ZERO, RAW, ZSTD, SPARSE or ZSTD_SPARSE;
 *                        otherwise 0
 *    6  2   flags        0 (none defined yet)
 *    8  4   round        pre-copy round this packet belongs to (1-based)
 *   12  4   n_pages      DATA: 1..max_run_pages; otherwise 0
 *   16  8   first_page   DATA: index of the run's first page
 *   24  8   seq          per-channel packet sequence, from 0
 *   32  4   payload_len  DATA ZERO: 0; RAW: n_pages*page_size;
 *                        ZSTD: 1..n_pages*page_size-1;
 *                        SPARSE: bitmap + present*page_size with
 *                        1 <= present < n_pages;
 *                        ZSTD_SPARSE: bitmap + 1..(n_pages-1)*page_size-1;
 *                        END: 32; SYNC: 0; RESULT: 8
 *   36  4   payload_crc  DATA RAW, ZSTD, SPARSE, ZSTD_SPARSE: CRC-32C of the
 *                        payload bytes as sent (bitmap first); 0 for
 *                        every other packet (ZERO, SYNC, END, RESULT: END
 *                        and RESULT bodies end in their own CRC)
 *   40  4   reserved     0
 *   44  4   header_crc   crc32c of bytes 0..43
 *
 * END's payload (32 bytes) carries the channel's totals:
 *    0 8 packets (DATA and SYNC sent before END)  8 8 pages
 *   16 8 payload bytes                            24 4 crc32c over those
 *   packets' header_crc values in order           28 4 crc32c of bytes 0..27
 * Each header_crc covers its payload_crc, so the chain covers the payloads.
 *
 * SPARSE's payload: a bitmap of ceil(n_pages / 64) little-endian u64 words
 * (bit k of word k / 64 set: page first_page + k follows), then the present
 * pages in order.  A clear bit is a zero page.  One packet thus carries a
 * window of scattered data and zero pages, as QEMU's multifd packets do,
 * instead of one packet per short run.
 *
 * ZSTD_SPARSE's payload: the same bitmap, then one zstd frame of the present
 * pages only, in order, smaller than they are (else the run goes SPARSE):
 * zero pages cost zstd nothing on either side, as in QEMU's multifd, and
 * the destination treats them as SPARSE's.  ZSTD frames carry runs without
 * a zero page.
 *
 * RESULT's payload (8 bytes): 0 4 status (0 success, else an enum proto_err,
 * or PROTO_RESULT_LOCAL_FAILURE)   4 4 crc32c of bytes 0..3
 */
#ifndef PF_PROTO_PACKET_H
#define PF_PROTO_PACKET_H

#include <stdbool.h>
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
enum proto_encoding {
	PROTO_ENC_ZERO = 0,
	PROTO_ENC_RAW = 1,
	PROTO_ENC_ZSTD = 2,
	PROTO_ENC_SPARSE = 3,
	PROTO_ENC_ZSTD_SPARSE = 4,
};
#define PROTO_ENC_LAST PROTO_ENC_ZSTD_SPARSE
#define PROTO_SPARSE_BITMAP_MAX 512u /* bytes, for the largest run limit (4095 pages) */

static inline uint32_t proto_sparse_bitmap_bytes(uint32_t n_pages)
{
	return (n_pages + 63) / 64 * 8;
}

/* Does the payload start with a page bitmap? */
static inline int proto_encoding_has_bitmap(uint8_t encoding)
{
	return encoding == PROTO_ENC_SPARSE || encoding == PROTO_ENC_ZSTD_SPARSE;
}
static inline int proto_encoding_is_zstd(uint8_t encoding)
{
	return encoding == PROTO_ENC_ZSTD || encoding == PROTO_ENC_ZSTD_SPARSE;
}

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

/* A SPARSE packet's bitmap, once received: no bit past n_pages, and exactly
 * `present` bits set (the count its payload length implies). */
enum proto_err proto_sparse_bitmap_check(const uint8_t *bitmap, uint32_t n_pages, uint32_t present);
/* A ZSTD_SPARSE packet's bitmap: no bit past n_pages, and some pages
 * present but not all (*present).  Its frame must then be smaller than
 * *present pages. */
enum proto_err proto_sparse_bitmap_some(const uint8_t *bitmap, uint32_t n_pages, uint32_t *present);
/* Bit k of a sparse bitmap. */
static inline int proto_sparse_bit(const uint8_t *bitmap, uint32_t k)
{
	return (bitmap[k / 8] >> (k % 8)) & 1;
}

/* The next maximal run of data pages of a page bitmap at or after *k:
 * [*start, *start + *len), and *k moves past it.  false when none is left. */
static inline bool proto_sparse_next_extent(const uint8_t *bitmap, uint32_t n_pages, uint32_t *k, uint32_t *start,
					 uint32_t *len)
{
	while (*k < n_pages && !proto_sparse_bit(bitmap, *k))
		(*k)++;
	if (*k == n_pages)
		return false;
	*start = *k;
	while (*k < n_pages && proto_sparse_bit(bitmap, *k))
		(*k)++;
	*len = *k - *start;
	return true;
}
/* Does a DATA packet's payload have a checksum (a non-empty page payload)? */
static inline int proto_packet_has_payload_crc(const struct proto_packet *p)
{
	return p->type == PROTO_PKT_DATA && p->encoding != PROTO_ENC_ZERO;
}

void proto_end_body_encode(const struct proto_end_body *e, uint8_t out[PROTO_END_BODY_SIZE]);
enum proto_err proto_end_body_decode(const uint8_t *buf, size_t len, struct proto_end_body *out);
void proto_result_encode(uint32_t status, uint8_t out[PROTO_RESULT_BODY_SIZE]);
/* A whole RESULT packet, header then body, ready for one send. */
#define PROTO_RESULT_PACKET_SIZE (PROTO_PACKET_HEADER_SIZE + PROTO_RESULT_BODY_SIZE)
void proto_result_packet_encode(uint32_t status, uint8_t out[PROTO_RESULT_PACKET_SIZE]);
enum proto_err proto_result_decode(const uint8_t *buf, size_t len, uint32_t *status);

#endif
