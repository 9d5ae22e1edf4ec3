/* Whole-buffer positioned I/O that retries short transfers and EINTR. */
#ifndef PF_DIO_SYNC_H
#define PF_DIO_SYNC_H

#include <stdint.h>

/* -errno on failure; -ENODATA when the file ends first. */
int dio_pread_full(int fd, void *buf, uint64_t len, uint64_t off);
/* -errno on failure; -EIO if the kernel writes nothing. */
int dio_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off);

#endif
