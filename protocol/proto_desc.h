/* Descriptors that travel through the shm rings between pipeline stages.
 * A ring slot is 16 bytes: w0 and w1 (shm_layout.h).  The producer may be a
 * compromised sandboxed process, so the consumer decodes its private copy of
 * the slot and checks it against geometry it holds itself.
 *
 *   w0 = first_page
 *   w1 = type (bits 0-3) | encoding (4-7) | n_pages (8-19) | buffer (20-31)
 *        | payload_len (32-63)
 */
#ifndef PF_PROTO_DESC_H
#define PF_PROTO_DESC_H

#include <stdint.h>

#include "protocol/proto_error.h"
#include "protocol/proto_geometry.h"
#include "shm/shm_layout.h"

enum proto_desc_type {
	PROTO_DESC_RUN = 1,	/* pages [first_page, +n_pages) to handle */
	PROTO_DESC_BUFFER = 2,	/* an arena buffer (holding payload_len bytes) */
	PROTO_DESC_FENCE = 3,	/* end of a round: everything before it is done */
	PROTO_DESC_END = 4,	/* no more descriptors on this ring */
};

#define PROTO_DESC_MAX_BUFFERS 4096u

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

#endif
