#include "writer/wr_snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "protocol/proto_crc32c.h"

static int pwrite_full(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int write_header(struct wr_snapfile *f)
{
	uint8_t block[PROTO_SNAP_HEADER_SIZE] = { 0 };
	proto_snap_header_encode(&f->hdr, block);
	return pwrite_full(f->meta_fd, block, sizeof(block), 0);
}

#define FAIL(step, expr)                 \
	do {                             \
		int rc_ = (expr);        \
		if (rc_ < 0) {           \
			*what = (step);  \
			return rc_;      \
		}                        \
	} while (0)

int wr_snapfile_begin(struct wr_snapfile *f, int meta_fd, int data_fd, uint32_t page_size,
		      uint64_t guest_size, const char **what)
{
	memset(f, 0, sizeof(*f));
	f->meta_fd = meta_fd;
	f->data_fd = data_fd;
	int fl = fcntl(data_fd, F_GETFL);
	FAIL("fcntl(F_GETFL) on the data fd", fl < 0 ? -errno : 0);
	f->direct = (fl & O_DIRECT) != 0;
	FAIL("snapshot geometry", proto_snap_header_init(&f->hdr, page_size, guest_size) ? -EINVAL : 0);
	if (getrandom(f->hdr.snapshot_id, sizeof(f->hdr.snapshot_id), 0) != sizeof(f->hdr.snapshot_id))
		FAIL("getrandom", -errno);
	f->bitmap = calloc(1, f->hdr.bitmap_len);
	FAIL("allocating the bitmap", f->bitmap ? 0 : -ENOMEM);
	/* Header says WRITING from the first byte on: an interrupted snapshot is
	 * recognisable as such, whatever else made it to disk. */
	FAIL("writing the header", write_header(f));
	FAIL("writing the bitmap", pwrite_full(meta_fd, f->bitmap, f->hdr.bitmap_len, f->hdr.bitmap_offset));
	FAIL("sizing the file", ftruncate(meta_fd, (off_t)(f->hdr.data_offset + guest_size)) < 0 ? -errno : 0);
	return 0;
}

int wr_snapfile_write_run(struct wr_snapfile *f, const uint8_t *src, uint64_t first, uint32_t n)
{
	uint64_t len = (uint64_t)n * f->hdr.page_size;
	int rc = pwrite_full(f->data_fd, src, len, f->hdr.data_offset + first * f->hdr.page_size);
	if (rc < 0)
		return rc;
	for (uint64_t p = first; p < first + n; p++)
		proto_bitmap_set(f->bitmap, p);
	f->hdr.pages_present += n;
	f->bytes_written += len;
	f->pwrite_calls++;
	return 0;
}

int wr_snapfile_finish(struct wr_snapfile *f, const char **what)
{
	FAIL("fdatasync of the page data", fdatasync(f->data_fd) < 0 ? -errno : 0);
	FAIL("writing the bitmap", pwrite_full(f->meta_fd, f->bitmap, f->hdr.bitmap_len, f->hdr.bitmap_offset));
	FAIL("fdatasync of the bitmap", fdatasync(f->meta_fd) < 0 ? -errno : 0);
	f->hdr.bitmap_crc = proto_crc32c(0, f->bitmap, f->hdr.bitmap_len);
	f->hdr.state = PROTO_SNAP_COMPLETE;
	FAIL("writing the final header", write_header(f));
	FAIL("fdatasync of the header", fdatasync(f->meta_fd) < 0 ? -errno : 0);
	return 0;
}
