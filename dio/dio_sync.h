/* Whole-buffer positioned I/O that retries short transfers and EINTR. */
#ifndef PF_DIO_SYNC_H
#define PF_DIO_SYNC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/* All of iov (which it consumes: n_iov > 0, no empty buffer) at off, read
 * or written: -errno on failure; -ENODATA when the file ends before a
 * read is done, -EIO if the kernel writes nothing. */
int dio_rwv_full(int fd, bool write, struct iovec *iov, int n_iov, uint64_t off);
/* -errno on failure; -ENODATA when the file ends first. */
int dio_pread_full(int fd, void *buf, uint64_t len, uint64_t off);
/* -errno on failure; -EIO if the kernel writes nothing. */
int dio_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off);

#endif
