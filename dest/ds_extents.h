/* The snapshot's extent table (protocol/proto_snapfile.h), read in batches
 * from the buffered snapshot fd: never held whole in memory. */
#ifndef PF_DS_EXTENTS_H
#define PF_DS_EXTENTS_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_snapfile.h"

/* Extent records read at a time (16 KiB). */
#define DS_EXTENT_BATCH 1024u

/* Check the whole table before any page is read: its CRC first (a flipped
 * byte is reported as such), then every record field by field against the
 * header and bitmap (inside the guest, not empty, present in the bitmap, no
 * overlap: a seen-bitmap) and that together they cover exactly the present
 * pages.  -EBADMSG with *why the protocol message, or -errno (*why the step). */
int ds_extents_validate(int meta_fd, const struct proto_snap_header *h, const uint8_t *bitmap, const char **why);
/* Read records [first, first + n) (n <= DS_EXTENT_BATCH) into buf. */
int ds_extents_read(int meta_fd, const struct proto_snap_header *h, uint64_t first, uint32_t n, uint8_t *buf);

#endif
