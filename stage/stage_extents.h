/* Where a file holds data: the guest's pages that were never written are
 * holes, and reading one through a mapping would allocate it.  One walker
 * for every stage that must skip them: the scanner, the writer's re-check,
 * the in-place receiver. */
#ifndef PF_STAGE_EXTENTS_H
#define PF_STAGE_EXTENTS_H

#include <stdint.h>

/* The first data extent of fd at or after byte pos, clipped to size
 * (SEEK_DATA/SEEK_HOLE): 1 with [*data, *end), 0 when there is none,
 * -errno.  A file system without hole support reports all of [pos, size). */
int stage_next_data_extent(int fd, uint64_t pos, uint64_t size, uint64_t *data, uint64_t *end);

#endif
