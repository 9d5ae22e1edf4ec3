/* Receiving into an existing RAM file (`pageferry receive --in-place`): the
 * destination VMM's own guest RAM, already sized and often pre-allocated,
 * which may hold anything (a failed earlier attempt, stale contents).
 *
 * Two things differ from a fresh destination:
 *  - a page the source has as zero must be made zero here too, where a
 *    fresh file is all holes already.  Only pages that held data when the
 *    receive started can be non-zero, so those are checked and cleared; the
 *    rest are left alone (reading a tmpfs hole through a mapping would
 *    allocate it).
 *  - its allocated pages are mapped up front (MADV_POPULATE_WRITE) before
 *    the sender connects, so placing pages does not page-fault on each one.
 */
#ifndef PF_DS_INPLACE_H
#define PF_DS_INPLACE_H

#include <stdint.h>

struct ds_extent {
	uint64_t start, end;	/* bytes [start, end) */
};

struct ds_inplace {
	uint64_t size;		/* the file's size: the guest's must equal it */
	uint64_t n_extents;
	struct ds_extent *extents; /* what held data at the start, in order */
};

/* Read the file's size and its data extents (lseek SEEK_DATA/SEEK_HOLE).
 * -errno with *what naming the step. */
int ds_inplace_open(struct ds_inplace *ip, int fd, const char **what);
/* Map the pages of every data extent of `map` (the file mapped writable) in
 * one go.  Best effort: a kernel without MADV_POPULATE_WRITE faults them in
 * one at a time later. */
void ds_inplace_populate(const struct ds_inplace *ip, uint8_t *map);
/* Make the bytes [off, off + len) of `map` read as zeros, writing only the
 * pages (of `page` bytes) that held data at the start and are not zero.
 * Returns how many pages it wrote. */
uint64_t ds_inplace_zero(const struct ds_inplace *ip, uint8_t *map, uint64_t off, uint64_t len, uint32_t page);

#endif
