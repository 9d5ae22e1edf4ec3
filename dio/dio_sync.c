#include "dio/dio_sync.h"

#include <errno.h>
#include <unistd.h>

int dio_rwv_full(int fd, bool write, struct iovec *iov, int n_iov, uint64_t off)
{
	while (n_iov > 0) {
		/* One buffer: pread/pwrite, the calls the workers' and inflaters'
		 * sandboxes allow (on fd 4 only), not their vector forms. */
		ssize_t n = n_iov == 1 ? (write ? pwrite(fd, iov->iov_base, iov->iov_len, (off_t)off)
					       : pread(fd, iov->iov_base, iov->iov_len, (off_t)off))
				       : (write ? pwritev(fd, iov, n_iov, (off_t)off) : preadv(fd, iov, n_iov, (off_t)off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return write ? -EIO : -ENODATA;
		off += (uint64_t)n;
		/* Skip what moved: whole buffers, then part of the next. */
		while (n_iov > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			n_iov--;
		}
		if (n_iov > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

int dio_pread_full(int fd, void *buf, uint64_t len, uint64_t off)
{
	struct iovec v = { buf, len };
	return len ? dio_rwv_full(fd, false, &v, 1, off) : 0;
}

int dio_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off)
{
	struct iovec v = { (void *)buf, len };
	return len ? dio_rwv_full(fd, true, &v, 1, off) : 0;
}
