#include "receiver/rc_restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "protocol/proto_error.h"

/* A chunk is the unit threads claim: big enough that claiming is rare, small
 * enough that work spreads evenly.  Reads never cross a chunk. */
#define CHUNK_BYTES (4u << 20)

int rc_restore_open(struct rc_restore *r, int meta_fd, int data_fd, int dest_fd, const char **why)
{
	memset(r, 0, sizeof(*r));
	r->meta_fd = meta_fd;
	r->data_fd = data_fd;
	r->dest_fd = dest_fd;
	int fl = fcntl(data_fd, F_GETFL);
	r->direct = fl >= 0 && (fl & O_DIRECT);
	struct stat st;
	if (fstat(meta_fd, &st) < 0) {
		*why = "fstat of the snapshot";
		return -errno;
	}
	uint8_t fields[PROTO_SNAP_FIELDS_SIZE] = { 0 };
	ssize_t got = pread(meta_fd, fields, sizeof(fields), 0);
	if (got < 0) {
		*why = "reading the snapshot header";
		return -errno;
	}
	enum proto_err err = proto_snap_header_decode(fields, (size_t)got, (uint64_t)st.st_size, &r->hdr);
	if (err != PROTO_OK) {
		*why = proto_strerror(err);
		return -EBADMSG;
	}
	r->bitmap = malloc(r->hdr.bitmap_len);
	if (!r->bitmap) {
		*why = "allocating the bitmap";
		return -ENOMEM;
	}
	int rc = dio_pread_full(meta_fd, r->bitmap, r->hdr.bitmap_len, r->hdr.bitmap_offset);
	if (rc < 0) {
		*why = "reading the snapshot bitmap";
		return rc;
	}
	err = proto_snap_bitmap_check(&r->hdr, r->bitmap, r->hdr.bitmap_len);
	if (err != PROTO_OK) {
		*why = proto_strerror(err);
		return -EBADMSG;
	}
	return 0;
}

int rc_restore_map_dest(struct rc_restore *r, const char **why)
{
	if (ftruncate(r->dest_fd, (off_t)r->hdr.guest_size) < 0) {
		*why = "sizing the destination";
		return -errno;
	}
	r->dest = mmap(NULL, r->hdr.guest_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->dest_fd, 0);
	if (r->dest == MAP_FAILED) {
		r->dest = NULL;
		*why = "mapping the destination";
		return -errno;
	}
	return 0;
}

static void fail(struct rc_restore *r, int neg_errno)
{
	int none = 0;
	atomic_compare_exchange_strong(&r->failed_errno, &none, -neg_errno);
}

static void read_done(void *ctx, uint64_t first_page, uint64_t len)
{
	(void)first_page;
	struct rc_reader *rd = ctx;
	rd->bytes_done += len;
}

int rc_reader_init(struct rc_reader *rd, struct rc_restore *r)
{
	rd->restore = r;
	rd->bytes_done = 0;
	return dio_queue_init(&rd->queue, RC_RESTORE_DEPTH, read_done, rd);
}

static void publish_progress(struct rc_reader *rd, uint64_t pages)
{
	struct shm_stats *stats = rd->restore->stats;
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_BYTES], rd->bytes_done, memory_order_relaxed);
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_PAGES], pages, memory_order_relaxed);
	rd->bytes_done = 0;
}

void *rc_restore_reader(void *arg)
{
	struct rc_reader *rd = arg;
	struct rc_restore *r = rd->restore;
	const uint64_t page = r->hdr.page_size;
	const uint64_t chunk_pages = CHUNK_BYTES / page ? CHUNK_BYTES / page : 1;
	const uint64_t n_chunks = (r->hdr.n_pages + chunk_pages - 1) / chunk_pages;
	for (;;) {
		if (atomic_load(&r->failed_errno))
			break;
		uint64_t c = atomic_fetch_add(&r->next_chunk, 1);
		if (c >= n_chunks)
			break;
		uint64_t p = c * chunk_pages;
		uint64_t end = p + chunk_pages < r->hdr.n_pages ? p + chunk_pages : r->hdr.n_pages;
		while (p < end) {
			while (p < end && !proto_bitmap_test(r->bitmap, p))
				p++;
			uint64_t run = p;
			while (p < end && proto_bitmap_test(r->bitmap, p))
				p++;
			if (p == run)
				continue;
			int rc = dio_queue_submit(&rd->queue, DIO_READ, r->data_fd, r->dest + run * page,
						  (p - run) * page, r->hdr.data_offset + run * page, run);
			if (rc < 0) {
				fail(r, rc);
				return NULL;
			}
		}
		/* Pages count as restored when their chunk is claimed; bytes when
		 * their reads complete. */
		publish_progress(rd, end - c * chunk_pages);
	}
	int rc = dio_queue_drain(&rd->queue);
	if (rc < 0)
		fail(r, rc);
	publish_progress(rd, 0);
	return NULL;
}
