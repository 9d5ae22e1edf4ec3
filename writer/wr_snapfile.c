#include "writer/wr_snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "protocol/proto_crc32c.h"

static int write_header(struct wr_snapfile *f)
{
	uint8_t block[PROTO_SNAP_HEADER_SIZE] = { 0 };
	proto_snap_header_encode(&f->hdr, block);
	return dio_pwrite_full(f->meta_fd, block, sizeof(block), 0);
}

/* A write completed in full: only now do its pages count as present, and
 * its pieces go back to their owners. */
static void write_done(void *ctx, uint64_t slot, uint64_t len)
{
	struct wr_snapfile *f = ctx;
	struct wr_snapfile_write *w = &f->in_flight[slot];
	for (uint64_t p = w->first; p < w->first + w->pages; p++)
		proto_bitmap_set(f->bitmap, p);
	f->hdr.pages_present += w->pages;
	f->bytes_written += len;
	for (uint32_t i = 0; i < w->n; i++)
		f->released(f->released_ctx, w->owners[i]);
	f->free_slots[f->n_free++] = (uint32_t)slot;
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
	/* One more than the queue's depth: a slot is taken before its submit
	 * waits for one of the queue's to free. */
	f->in_flight = calloc(WR_SNAPFILE_DEPTH + 1, sizeof(*f->in_flight));
	f->free_slots = calloc(WR_SNAPFILE_DEPTH + 1, sizeof(*f->free_slots));
	FAIL("allocating the write slots", f->in_flight && f->free_slots ? 0 : -ENOMEM);
	for (uint32_t i = 0; i <= WR_SNAPFILE_DEPTH; i++)
		f->free_slots[f->n_free++] = i;
	f->table_buf = malloc(WR_SNAPFILE_TABLE_BATCH * PROTO_SNAP_EXTENT_SIZE);
	FAIL("allocating the extent table buffer", f->table_buf ? 0 : -ENOMEM);
	FAIL("setting up asynchronous I/O (io_setup)", dio_queue_init(&f->queue, WR_SNAPFILE_DEPTH, write_done, f));
	/* Header says WRITING from the first byte on: an interrupted snapshot is
	 * recognisable as such, whatever else made it to disk. */
	FAIL("writing the header", write_header(f));
	FAIL("writing the bitmap", dio_pwrite_full(meta_fd, f->bitmap, f->hdr.bitmap_len, f->hdr.bitmap_offset));
	FAIL("sizing the file", ftruncate(meta_fd, (off_t)(f->hdr.data_offset + guest_size)) < 0 ? -errno : 0);
	return 0;
}

int wr_snapfile_copy_state(struct wr_snapfile *f, int state_fd, const char **what)
{
	static uint8_t chunk[64 << 10];
	struct stat st;
	FAIL("fstat of the device state", fstat(state_fd, &st) < 0 ? -errno : 0);
	FAIL("the device state's length", st.st_size <= 0 || (uint64_t)st.st_size > PROTO_SNAP_STATE_MAX ? -EMSGSIZE : 0);
	uint32_t len = (uint32_t)st.st_size, crc = 0;
	for (uint32_t done = 0; done < len;) {
		uint32_t n = len - done < sizeof(chunk) ? len - done : (uint32_t)sizeof(chunk);
		FAIL("reading the device state", dio_pread_full(state_fd, chunk, n, done));
		FAIL("writing the device state into the snapshot",
		     dio_pwrite_full(f->meta_fd, chunk, n, proto_snap_state_offset(&f->hdr) + done));
		crc = proto_crc32c(crc, chunk, n);
		done += n;
	}
	f->hdr.flags |= PROTO_SNAP_F_DEVICE_STATE;
	f->hdr.device_state_len = len;
	f->hdr.device_state_crc = crc;
	return 0;
}

/* Buffered records go out in one pwrite through the buffered fd (the table
 * region is reserved and sparse until then); the table's CRC runs along. */
static int table_flush(struct wr_snapfile *f)
{
	if (!f->table_buffered)
		return 0;
	size_t len = (size_t)f->table_buffered * PROTO_SNAP_EXTENT_SIZE;
	f->hdr.extent_crc = proto_crc32c(f->hdr.extent_crc, f->table_buf, len);
	int rc = dio_pwrite_full(f->meta_fd, f->table_buf, len,
				 f->hdr.extent_table_offset + f->table_written * PROTO_SNAP_EXTENT_SIZE);
	f->table_written += f->table_buffered;
	f->table_buffered = 0;
	return rc;
}

/* One record per RAW sub-run, in the order they arrive.  A record is worth
 * nothing until the header says COMPLETE, which needs every write done. */
static int table_add(struct wr_snapfile *f, uint64_t first, uint32_t n, uint32_t crc)
{
	if (f->table_written + f->table_buffered >= f->hdr.n_pages)
		return -E2BIG;
	struct proto_snap_extent e = { .first_page = first, .n_pages = n, .crc = crc };
	proto_snap_extent_encode(&e, f->table_buf + (size_t)f->table_buffered * PROTO_SNAP_EXTENT_SIZE);
	if (++f->table_buffered == WR_SNAPFILE_TABLE_BATCH)
		return table_flush(f);
	return 0;
}

int wr_snapfile_flush(struct wr_snapfile *f)
{
	if (!f->pending.n)
		return 0;
	uint32_t slot = f->free_slots[--f->n_free];
	struct wr_snapfile_write *w = &f->in_flight[slot];
	*w = f->pending;
	f->pending.n = 0;
	f->writes++;
	int rc = dio_queue_submitv(&f->queue, DIO_WRITE, f->data_fd, w->iov, w->n,
				   f->hdr.data_offset + w->first * f->hdr.page_size, slot);
	if (rc < 0)
		f->free_slots[f->n_free++] = slot;
	return rc;
}

int wr_snapfile_add_extent(struct wr_snapfile *f, const uint8_t *src, uint64_t first, uint32_t n, uint32_t crc,
			   uint32_t owner)
{
	uint64_t page = f->hdr.page_size;
	if (first >= f->hdr.n_pages || n > f->hdr.n_pages - first)
		return -EINVAL;
	int rc = table_add(f, first, n, crc);
	if (rc < 0)
		return rc;
	struct wr_snapfile_write *w = &f->pending;
	if (w->n && (first != w->first + w->pages || w->n == DIO_QUEUE_MAX_IOV ||
		     (w->pages + n) * page > WR_SNAPFILE_MAX_WRITE))
		if ((rc = wr_snapfile_flush(f)) < 0)
			return rc;
	if (!w->n) {
		w->first = first;
		w->pages = 0;
	}
	w->iov[w->n] = (struct iovec){ (void *)src, n * page };
	w->owners[w->n++] = owner;
	w->pages += n;
	return 0;
}

int wr_snapfile_notify_fd(struct wr_snapfile *f)
{
	return dio_queue_notify(&f->queue);
}

int wr_snapfile_reap(struct wr_snapfile *f)
{
	return dio_queue_reap(&f->queue);
}

int wr_snapfile_drain(struct wr_snapfile *f, const char **what)
{
	FAIL("writing page data to the snapshot", wr_snapfile_flush(f));
	FAIL("writing page data to the snapshot", dio_queue_drain(&f->queue));
	return 0;
}

int wr_snapfile_finish(struct wr_snapfile *f, const char **what)
{
	int rc = wr_snapfile_drain(f, what);
	if (rc < 0)
		return rc;
	FAIL("fdatasync of the snapshot's page data", fdatasync(f->data_fd) < 0 ? -errno : 0);
	FAIL("writing the snapshot bitmap", dio_pwrite_full(f->meta_fd, f->bitmap, f->hdr.bitmap_len, f->hdr.bitmap_offset));
	FAIL("writing the snapshot's extent table", table_flush(f));
	f->hdr.extent_count = f->table_written;
	FAIL("fdatasync of the snapshot bitmap and extent table", fdatasync(f->meta_fd) < 0 ? -errno : 0);
	f->hdr.bitmap_crc = proto_crc32c(0, f->bitmap, f->hdr.bitmap_len);
	f->hdr.state = PROTO_SNAP_COMPLETE;
	FAIL("writing the final snapshot header", write_header(f));
	FAIL("fdatasync of the snapshot header", fdatasync(f->meta_fd) < 0 ? -errno : 0);
	return 0;
}
