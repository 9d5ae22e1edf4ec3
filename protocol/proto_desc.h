/* Descriptors that travel through the shm rings between pipeline stages.
 * A ring slot is 16 bytes: w0 and w1 (shm_layout.h).  The producer may be a
 * compromised sandboxed process, so the consumer decodes its private copy of
 * the slot and checks it against geometry it holds itself.
 *
 *   w0 = first_page
 *   w1 = type (bits 0-3) | encoding (4-7) | n_pages (8-19) | buffer (20-31)
 *        | payload_len (32-63)
 *
 * What payload_len means depends on the RUN's encoding:
 *   ZERO: 0.
 *   RAW:  the CRC-32C of the run's n_pages pages, as the worker read them
 *         (the length is implied: n_pages * page_size).  Scanner -> worker
 *         runs are ZERO-encoded "to check" runs and carry 0.
 *   SPARSE: the CRC-32C of the packet payload it becomes: the bitmap in the
 *         run's record (workers/wk_record.h), then the data pages.
 *   ZSTD: the frame's length in bytes, 1 .. n_pages * page_size - 4; the
 *         frame's CRC-32C follows it, little-endian, in the same arena
 *         buffer (proto_desc_frame_crc), so a frame leaves 4 bytes of room.
 *   ZSTD_SPARSE: the same, with the frame of the data pages only; the CRC
 *         after it is the packet's, over the bitmap (in the record) then the
 *         frame.  On the destination's rings the bitmap is at the buffer's
 *         start and the frame after it (dest/ds_inflaters.h).
 * A worker's RAW, SPARSE, ZSTD and ZSTD_SPARSE runs name the arena buffer
 * holding the run's record (and the frame); ZERO runs hold no buffer.
 *
 * RESYNCED (writer -> a replacement worker): first_page is how many RUN,
 * FENCE and END descriptors the writer took from that worker's ring so far;
 * payload_len has bit b set for each of its arena buffers the writer holds.
 */
#ifndef PF_PROTO_DESC_H
#define PF_PROTO_DESC_H

#include <stdbool.h>
#include <stdint.h>

#include "protocol/proto_error.h"
#include "protocol/proto_geometry.h"
#include "shm/shm_layout.h"

enum proto_desc_type {
	PROTO_DESC_RUN = 1,	/* pages [first_page, +n_pages) to handle */
	PROTO_DESC_BUFFER = 2,	/* an arena buffer (holding payload_len bytes) */
	PROTO_DESC_FENCE = 3,	/* end of a round: everything before it is done */
	PROTO_DESC_END = 4,	/* no more descriptors on this ring */
	/* The end-of-copy re-check (writer/wr_recheck.h), after END: */
	PROTO_DESC_RECHECK = 5,	    /* writer -> worker: fingerprint [first_page, +n_pages) again */
	PROTO_DESC_RECHECK_END = 6, /* writer -> worker: no more; answer RECHECKED */
	PROTO_DESC_RECHECKED = 7,   /* worker -> writer: every XOR of ours is done */
	/* A replaced worker resuming (doc/architecture.md, "Replacing a stage"): */
	PROTO_DESC_RESYNC = 8,	    /* worker -> writer: I replace the worker before me */
	PROTO_DESC_RESYNCED = 9,    /* writer -> worker: where it stopped (above) */
};

#define PROTO_DESC_FRAME_CRC_BYTES 4u	/* after a ZSTD frame in its buffer */

struct proto_desc {
	uint8_t type;
	uint8_t encoding;	/* enum proto_encoding */
	uint16_t buffer;
	uint32_t n_pages;
	uint32_t payload_len;
	uint64_t first_page;
};

static inline struct shm_slot proto_desc_pack(const struct proto_desc *d)
{
	struct shm_slot s;
	s.w0 = d->first_page;
	s.w1 = (uint64_t)(d->type & 0xf) | ((uint64_t)(d->encoding & 0xf) << 4) |
	       ((uint64_t)(d->n_pages & 0xfff) << 8) | ((uint64_t)(d->buffer & 0xfff) << 20) |
	       ((uint64_t)d->payload_len << 32);
	return s;
}

/* Unpack and check a slot.  n_buffers is the number of arena buffers the
 * consumer knows to exist (0 when buffers are not used on this ring). */
enum proto_err proto_desc_unpack(struct shm_slot slot, const struct proto_geometry *geo,
				 uint32_t n_buffers, struct proto_desc *out);

/* The CRC-32C stored after a ZSTD frame of payload_len bytes in an arena
 * buffer of buffer_size bytes; false if the descriptor leaves it no room
 * (the producer is not trusted: check before reading). */
static inline bool proto_desc_frame_crc(const uint8_t *buffer, uint64_t buffer_size, uint32_t payload_len,
					uint32_t *crc)
{
	if ((uint64_t)payload_len + PROTO_DESC_FRAME_CRC_BYTES > buffer_size)
		return false;
	const uint8_t *p = buffer + payload_len;
	*crc = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	return true;
}

#endif
