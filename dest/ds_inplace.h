/* Receiving into an existing RAM file (`pageferry receive --in-place`): the
 * destination VMM's own guest RAM, already sized and often pre-allocated,
 * which may hold anything (a failed earlier attempt, stale contents).
 *
 * A page the source has as zero must be made zero here too, where a fresh
 * file is all holes already.  Which pages are not zero is learned once,
 * when the receive starts and before anyone connects: the file's data
 * extents (SEEK_DATA/SEEK_HOLE; holes read as zeros) are read with pread
 * and every 4 KiB that is not zero gets a bit.  During the transfer a zero
 * page then costs a look at the bitmap, and only pages whose bit is set
 * are written.  The file must not change while the receive runs (it is
 * the RAM of a VMM waiting for this migration); the bitmap is 32 KiB per
 * GiB.
 */
#ifndef PF_DS_INPLACE_H
#define PF_DS_INPLACE_H

#include <stdbool.h>
#include <stdint.h>

#include "dest/ds_place.h"

#define DS_INPLACE_UNIT 4096u /* the bitmap's granularity: the smallest page */

struct ds_inplace {
	uint64_t size;		/* the file's size: the guest's must equal it */
	uint64_t *nonzero;	/* a bit per DS_INPLACE_UNIT: held data at the start */
	uint64_t nonzero_units;	/* how many bits are set */
};

/* Read the file's size and which of its 4 KiB units are not zero (zeroed:
 * the user says it reads as zeros, a VMM's newly allocated RAM: it is not
 * read and no bitmap is allocated).  -errno with *what naming the step.
 * Before lock-down. */
int ds_inplace_open(struct ds_inplace *ip, int fd, bool zeroed, const char **what);

/* Make the bytes [off, off + len) (whole units) read as zeros, writing
 * only the units that were not zero at the start.  Threads may call it at
 * once for disjoint ranges.  Returns how many units it wrote, or -errno. */
int64_t ds_inplace_zero(const struct ds_inplace *ip, const struct ds_place *pl, uint64_t off, uint64_t len);

#endif
