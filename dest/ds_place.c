#include "dest/ds_place.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "dio/dio_sync.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/* tmpfs says in st_blksize whether it hands this file 2 MiB pages
 * (huge=always, or within_size): then a mapping costs one fault per 2 MiB. */
static int huge_tmpfs(int fd, const struct statfs *fs)
{
	struct stat st;
	if (fs->f_type != TMPFS_MAGIC)
		return 0;
	if (fstat(fd, &st) < 0)
		stage_die_errno(-errno, "fstat of the destination");
	return st.st_blksize >= (2 << 20);
}

/* What ds_place_write_zeros writes from. */
static const uint8_t zeros[64 << 10];

void ds_place_open(struct ds_place *pl, int fd, uint64_t size)
{
	memset(pl, 0, sizeof(*pl));
	pl->fd = fd;
	stage_fault_describe(STAGE_MAP_DEST, fd, size, pl->full, sizeof(pl->full));
	struct statfs fs;
	if (fstatfs(fd, &fs) < 0)
		stage_die_errno(-errno, "fstatfs of the destination");
	if (fs.f_type == HUGETLBFS_MAGIC || huge_tmpfs(fd, &fs))
		pl->map = stage_map_file(fd, "destination", size, 1);
}

/* A store into the mapping fails as a pwrite would on a full filesystem:
 * -ENOSPC, not SIGBUS, so that the receiver can tell the sender. */
static int store(uint8_t *dst, const void *src, size_t len)
{
	sigjmp_buf env;
	if (sigsetjmp(env, 0))
		return stage_fault_recovered();
	stage_fault_guard(&env);
	if (src)
		memcpy(dst, src, len);
	else
		memset(dst, 0, len);
	stage_fault_guard(NULL);
	return 0;
}

int ds_place_write(const struct ds_place *pl, const void *src, size_t len, uint64_t off)
{
	if (pl->map)
		return store(pl->map + off, src, len);
	return dio_pwrite_full(pl->fd, src, len, off);
}

int ds_place_write_zeros(const struct ds_place *pl, uint64_t off, uint64_t len)
{
	if (pl->map)
		return store(pl->map + off, NULL, len);
	while (len) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		int rc = ds_place_write(pl, zeros, n, off);
		if (rc < 0)
			return rc;
		off += n;
		len -= n;
	}
	return 0;
}

int ds_place_punch(const struct ds_place *pl, uint64_t off, uint64_t len)
{
	if (fallocate(pl->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return 0;
	return ds_place_write_zeros(pl, off, len);
}

bool ds_place_is_full(const struct ds_place *pl, int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT || (rc == -EFAULT && pl->map);
}

void ds_place_failure(const struct ds_place *pl, int rc, uint64_t first, uint64_t n, char *out, size_t len)
{
	if (ds_place_is_full(pl, rc))
		snprintf(out, len, "%s", pl->full);
	else
		snprintf(out, len, "writing pages %llu..%llu of the destination: %s", (unsigned long long)first,
			 (unsigned long long)(first + n - 1), strerror(-rc));
}
