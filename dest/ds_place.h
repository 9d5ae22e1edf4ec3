/* Placing pages in the destination RAM file (the receive stage, its
 * inflaters and the restore stage).
 *
 * Where pages are 4 KiB, by pwrite(2), not through a mapping.  On the VMs
 * pageferry runs on, a page's first touch through a new mapping costs
 * several times the copy itself: writing 1 GiB into tmpfs took 0.11 s by
 * pwrite from a 256 KiB buffer, 0.36 s through a mapping populated ahead
 * (MADV_POPULATE_WRITE) and 0.48 s through one faulted page by page
 * (bench/place_cost.c, doc/benchmarks.md "Writing pages: pwrite or a
 * mapping").  And a process that maps the guest builds page tables for all
 * of it (2 MiB per GiB).  So a payload lands in a small buffer that stays in cache, is
 * checked there and written once.
 *
 * With 2 MiB pages the file is mapped: hugetlbfs takes no write(2), and
 * a tmpfs that gives the file huge pages (st_blksize 2 MiB) costs one
 * fault per 2 MiB there (and 8 bytes of page table), so pages go straight
 * in: the receiver takes raw pages from the socket into the mapping, and
 * restore reads into it.  On a huge=always tmpfs that restored 1 GiB in
 * place in 0.60-0.70 of the time pwrite took, and migrations took the
 * same time (a pwrite there costs 0.03 s per GiB; doc/benchmarks.md, "Huge
 * pages: the destination mapped").  A full filesystem then faults the
 * store (SIGBUS), which ds_place_write turns into -ENOSPC as a pwrite
 * would return (stage_fault_guard); a recv into the mapping fails with
 * EFAULT or faults in the copy out of TLS, which the receiver reports so
 * too.  Either way the sender is told why.
 */
#ifndef PF_DS_PLACE_H
#define PF_DS_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ds_place {
	int fd;
	uint8_t *map;		/* 2 MiB pages: the file mapped writable; else NULL */
	char full[384];		/* why a write found no space, in the user's terms */
};

/* Before lock-down (fstatfs, readlink, mmap); size is the file's size.
 * Dies with one line on failure. */
void ds_place_open(struct ds_place *pl, int fd, uint64_t size);

/* Write len bytes at off: 0, or -errno. */
int ds_place_write(const struct ds_place *pl, const void *src, size_t len, uint64_t off);

/* Write zeros over [off, off + len) without reading it: 0 or -errno. */
int ds_place_write_zeros(const struct ds_place *pl, uint64_t off, uint64_t len);

/* Make [off, off + len) read as zeros without reading it: a hole punched
 * (the file keeps its size), or zeros written where the filesystem cannot
 * punch.  0 or -errno. */
int ds_place_punch(const struct ds_place *pl, uint64_t off, uint64_t len);

/* The one line for a failed write of pages first..first + n - 1 (of `page`
 * bytes): "no space left on FILE ..." for ENOSPC and EDQUOT, and for
 * EFAULT on a mapped destination (a read or recv into a page that could
 * not be allocated); else which pages and strerror. */
void ds_place_failure(const struct ds_place *pl, int rc, uint64_t first, uint64_t n, char *out, size_t len);
/* Is rc (from ds_place_write, or a read into the mapping) the filesystem
 * being full?  The receiver tells its sender so (PROTO_E_DEST_FULL). */
bool ds_place_is_full(const struct ds_place *pl, int rc);

#endif
