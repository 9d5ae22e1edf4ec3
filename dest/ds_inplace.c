#include "dest/ds_inplace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stage/stage_extents.h"
#include "workers/wk_zero.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int add_extent(struct ds_inplace *ip, uint64_t *cap, uint64_t start, uint64_t end)
{
	if (ip->n_extents == *cap) {
		uint64_t grown = *cap ? *cap * 2 : 16;
		struct ds_extent *e = realloc(ip->extents, grown * sizeof(*e));
		if (!e)
			return -ENOMEM;
		ip->extents = e;
		*cap = grown;
	}
	ip->extents[ip->n_extents++] = (struct ds_extent){ start, end };
	return 0;
}

int ds_inplace_open(struct ds_inplace *ip, int fd, const char **what)
{
	memset(ip, 0, sizeof(*ip));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*what = "fstat of the destination";
		return -errno;
	}
	ip->size = (uint64_t)st.st_size;
	uint64_t cap = 0, pos = 0;
	while (pos < ip->size) {
		uint64_t data, end;
		int found = stage_next_data_extent(fd, pos, ip->size, &data, &end);
		if (found < 0) {
			*what = "finding the destination's data extents (SEEK_DATA/SEEK_HOLE)";
			return found;
		}
		if (!found)
			break;
		if (add_extent(ip, &cap, data, end) < 0) {
			*what = "allocating the destination's extent list";
			return -ENOMEM;
		}
		pos = end;
	}
	return 0;
}

void ds_inplace_populate(const struct ds_inplace *ip, uint8_t *map)
{
	long page = sysconf(_SC_PAGESIZE);
	for (uint64_t k = 0; k < ip->n_extents; k++) {
		uint64_t start = ip->extents[k].start & ~(uint64_t)(page - 1);
		(void)madvise(map + start, ip->extents[k].end - start, MADV_POPULATE_WRITE);
	}
}

/* The first extent that ends after `off`. */
static uint64_t first_extent_after(const struct ds_inplace *ip, uint64_t off)
{
	uint64_t lo = 0, hi = ip->n_extents;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (ip->extents[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint64_t ds_inplace_zero(const struct ds_inplace *ip, uint8_t *map, uint64_t off, uint64_t len, uint32_t page)
{
	uint64_t written = 0, end = off + len;
	for (uint64_t k = first_extent_after(ip, off); k < ip->n_extents && ip->extents[k].start < end; k++) {
		/* Whole pages that overlap this extent. */
		uint64_t from = ip->extents[k].start > off ? ip->extents[k].start : off;
		uint64_t to = ip->extents[k].end < end ? ip->extents[k].end : end;
		from -= (from - off) % page;
		for (uint64_t p = from; p < to; p += page)
			if (!wk_page_is_zero(map + p, page)) {
				memset(map + p, 0, page);
				written++;
			}
	}
	return written;
}
