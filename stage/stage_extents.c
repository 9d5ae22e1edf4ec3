#include "stage/stage_extents.h"

#include <errno.h>
#include <unistd.h>

int stage_next_data_extent(int fd, uint64_t pos, uint64_t size, uint64_t *data, uint64_t *end)
{
	off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
	if (d < 0 && errno == ENXIO)
		return 0;
	if (d < 0 && errno == EINVAL) { /* no hole support: everything is data */
		*data = pos;
		*end = size;
		return 1;
	}
	if (d < 0)
		return -errno;
	off_t h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return -errno;
	*data = (uint64_t)d;
	*end = (uint64_t)h < size ? (uint64_t)h : size;
	return 1;
}
