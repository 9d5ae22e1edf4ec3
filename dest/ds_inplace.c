#include "dest/ds_inplace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stage/stage_extents.h"
#include "workers/wk_zero.h"

#define SCAN_BYTES (256u << 10) /* stays in cache between pread and the check */

static int scan_extent(struct ds_inplace *ip, int fd, uint8_t *buf, uint64_t start, uint64_t end)
{
	start -= start % DS_INPLACE_UNIT;
	while (start < end) {
		size_t n = end - start < SCAN_BYTES ? (size_t)(end - start) : SCAN_BYTES;
		n += (DS_INPLACE_UNIT - n % DS_INPLACE_UNIT) % DS_INPLACE_UNIT;
		ssize_t got = pread(fd, buf, n, (off_t)start);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		size_t whole = (size_t)got - (size_t)got % DS_INPLACE_UNIT;
		if (!whole)
			return 0; /* the end, or a tail shorter than a unit: the handshake refuses that size */
		for (size_t p = 0; p < whole; p += DS_INPLACE_UNIT) {
			if (wk_page_is_zero(buf + p, DS_INPLACE_UNIT))
				continue;
			uint64_t u = (start + p) / DS_INPLACE_UNIT;
			ip->nonzero[u / 64] |= UINT64_C(1) << (u % 64);
			ip->nonzero_units++;
		}
		start += whole;
	}
	return 0;
}

int ds_inplace_open(struct ds_inplace *ip, int fd, bool zeroed, const char **what)
{
	memset(ip, 0, sizeof(*ip));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*what = "fstat of the destination";
		return -errno;
	}
	ip->size = (uint64_t)st.st_size;
	if (zeroed)
		return 0; /* nothing to learn: no bitmap (32 KiB per GiB) and no scan buffer */
	uint64_t units = (ip->size + DS_INPLACE_UNIT - 1) / DS_INPLACE_UNIT;
	ip->nonzero = calloc(units / 64 + 1, sizeof(uint64_t));
	uint8_t *buf = aligned_alloc(DS_INPLACE_UNIT, SCAN_BYTES);
	int rc = 0;
	if (!ip->nonzero || !buf) {
		*what = "allocating the destination's page bitmap";
		rc = -ENOMEM;
	}
	for (uint64_t pos = 0; rc == 0 && pos < ip->size;) {
		uint64_t data, end;
		int found = stage_next_data_extent(fd, pos, ip->size, &data, &end);
		if (found < 0) {
			*what = "finding the destination's data extents (SEEK_DATA/SEEK_HOLE)";
			rc = found;
			break;
		}
		if (!found)
			break;
		if ((rc = scan_extent(ip, fd, buf, data, end)) < 0)
			*what = "reading the destination";
		pos = end;
	}
	free(buf);
	return rc;
}

int64_t ds_inplace_zero(const struct ds_inplace *ip, const struct ds_place *pl, uint64_t off, uint64_t len)
{
	if (!ip->nonzero_units)
		return 0;
	int64_t written = 0;
	uint64_t u = off / DS_INPLACE_UNIT, end = (off + len) / DS_INPLACE_UNIT;
	while (u < end) {
		uint64_t word = ip->nonzero[u / 64] >> (u % 64);
		if (!word) { /* nothing set up to this word's end */
			u = (u / 64 + 1) * 64;
			continue;
		}
		u += (uint64_t)__builtin_ctzll(word);
		if (u >= end)
			break;
		uint64_t from = u;
		while (u < end && (ip->nonzero[u / 64] >> (u % 64) & 1))
			u++;
		int rc = ds_place_write_zeros(pl, from * DS_INPLACE_UNIT, (u - from) * DS_INPLACE_UNIT);
		if (rc < 0)
			return rc;
		written += (int64_t)(u - from);
	}
	return written;
}
