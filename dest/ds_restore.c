#include "dest/ds_restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_error.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"

/* A chunk is the unit threads claim: big enough that claiming is rare, small
 * enough that work spreads evenly.  Reads never cross a chunk. */
#define CHUNK_BYTES (4u << 20)

int ds_restore_open(struct ds_restore *r, int meta_fd, int data_fd, int dest_fd, const char **why)
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
	return ds_extents_validate(meta_fd, &r->hdr, r->bitmap, why);
}

int ds_restore_device_state(struct ds_restore *r, int out_fd, uint8_t *buf, const char **why)
{
	if (!(r->hdr.flags & PROTO_SNAP_F_DEVICE_STATE)) {
		if (out_fd < 0)
			return 0;
		*why = "the snapshot has no device state (it was not taken with snapshot --qmp)";
		return -EBADMSG;
	}
	int rc = dio_pread_full(r->meta_fd, buf, r->hdr.device_state_len, proto_snap_state_offset(&r->hdr));
	if (rc < 0)
		*why = "reading the snapshot's device state";
	else if (proto_crc32c(0, buf, r->hdr.device_state_len) != r->hdr.device_state_crc) {
		*why = proto_strerror(PROTO_E_DEVICE_STATE_CHECKSUM);
		rc = -EBADMSG;
	} else if (out_fd >= 0 && (rc = dio_pwrite_full(out_fd, buf, r->hdr.device_state_len, 0)) < 0)
		*why = "handing the device state over";
	return rc;
}

int ds_restore_map_dest(struct ds_restore *r, const char **why)
{
	if (!r->in_place && ftruncate(r->dest_fd, (off_t)r->hdr.guest_size) < 0) {
		*why = "sizing the destination";
		return -errno;
	}
	r->dest = mmap(NULL, r->hdr.guest_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->dest_fd, 0);
	if (r->dest == MAP_FAILED) {
		r->dest = NULL;
		*why = "mapping the destination";
		return -errno;
	}
	stage_sigbus_watch(STAGE_MAP_DEST, r->dest, r->hdr.guest_size, r->dest_fd);
	return 0;
}

static void fail(struct ds_restore *r, int neg_errno)
{
	int none = 0;
	atomic_compare_exchange_strong(&r->failed_errno, &none, -neg_errno);
}

static void zero_absent(struct ds_restore *r, uint64_t off, uint64_t len)
{
	if (fallocate(r->dest_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
		memset(r->dest + off, 0, len);
}

static void read_done(void *ctx, uint64_t first_page, uint64_t len)
{
	(void)first_page;
	struct ds_reader *rd = ctx;
	rd->bytes_done += len;
}

int ds_reader_init(struct ds_reader *rd, struct ds_restore *r)
{
	rd->restore = r;
	rd->bytes_done = 0;
	if (!r->dest) /* check only: read into our own buffer, no queue */
		return -posix_memalign((void **)&rd->buf, 4096, DS_CHECK_BUF);
	return dio_queue_init(&rd->queue, DS_RESTORE_DEPTH, read_done, rd);
}

static void publish_progress(struct ds_reader *rd, uint64_t pages)
{
	struct shm_stats *stats = rd->restore->stats;
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_BYTES], rd->bytes_done, memory_order_relaxed);
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_PAGES], pages, memory_order_relaxed);
	rd->bytes_done = 0;
}

static void read_pages(struct ds_reader *rd)
{
	struct ds_restore *r = rd->restore;
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
			uint64_t absent = p;
			while (p < end && !proto_bitmap_test(r->bitmap, p))
				p++;
			/* An existing destination may hold anything where the guest
			 * had zeros: make them holes (reads as zeros). */
			if (r->in_place && p > absent)
				zero_absent(r, absent * page, (p - absent) * page);
			uint64_t run = p;
			while (p < end && proto_bitmap_test(r->bitmap, p))
				p++;
			if (p == run)
				continue;
			int rc = dio_queue_submit(&rd->queue, DIO_READ, r->data_fd, r->dest + run * page,
						  (p - run) * page, r->hdr.data_offset + run * page, run);
			if (rc < 0) {
				fail(r, rc);
				break;
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
}

/* CRC of an extent's pages: in the destination, or (check only) read from
 * the snapshot's data region with O_DIRECT. */
static int extent_crc(struct ds_reader *rd, const struct proto_snap_extent *e, uint32_t *crc)
{
	struct ds_restore *r = rd->restore;
	const uint64_t page = r->hdr.page_size;
	if (r->dest) {
		*crc = proto_crc32c(0, r->dest + e->first_page * page, e->n_pages * page);
		return 0;
	}
	uint32_t c = 0;
	uint64_t off = r->hdr.data_offset + e->first_page * page, left = e->n_pages * page;
	while (left) {
		uint64_t n = left < DS_CHECK_BUF ? left : DS_CHECK_BUF;
		int rc = dio_pread_full(r->data_fd, rd->buf, n, off);
		if (rc < 0)
			return rc;
		c = proto_crc32c(c, rd->buf, n);
		rd->bytes_done += n;
		off += n;
		left -= n;
	}
	publish_progress(rd, e->n_pages);
	*crc = c;
	return 0;
}

static void note_bad(struct ds_restore *r, uint64_t index)
{
	uint64_t cur = atomic_load(&r->bad_extent);
	while ((cur == 0 || index + 1 < cur) &&
	       !atomic_compare_exchange_weak(&r->bad_extent, &cur, index + 1))
		;
}

/* Every extent's CRC.  The table was validated before any page was read;
 * a record is decoded again (range checked) since we read it again. */
static void verify_extents(struct ds_reader *rd)
{
	struct ds_restore *r = rd->restore;
	const uint64_t n_batches = (r->hdr.extent_count + DS_EXTENT_BATCH - 1) / DS_EXTENT_BATCH;
	for (;;) {
		if (atomic_load(&r->failed_errno))
			return;
		uint64_t b = atomic_fetch_add(&r->next_batch, 1);
		if (b >= n_batches)
			return;
		uint64_t first = b * DS_EXTENT_BATCH;
		uint32_t n = (uint32_t)(r->hdr.extent_count - first < DS_EXTENT_BATCH ? r->hdr.extent_count - first
										 : DS_EXTENT_BATCH);
		int rc = ds_extents_read(r->meta_fd, &r->hdr, first, n, rd->records);
		for (uint32_t k = 0; rc == 0 && k < n; k++) {
			struct proto_snap_extent e;
			uint32_t crc;
			if (proto_snap_extent_decode(rd->records + k * PROTO_SNAP_EXTENT_SIZE, &r->hdr, &e) != PROTO_OK)
				rc = -EBADMSG; /* it was valid a moment ago: the file changed */
			else if ((rc = extent_crc(rd, &e, &crc)) == 0 && crc != e.crc)
				note_bad(r, first + k);
		}
		if (rc < 0) {
			fail(r, rc);
			return;
		}
	}
}

void *ds_restore_reader(void *arg)
{
	struct ds_reader *rd = arg;
	struct ds_restore *r = rd->restore;
	if (r->dest)
		read_pages(rd);
	/* Every thread gets here, failed or not: a verifier must not read
	 * pages another thread's reads are still filling. */
	pthread_barrier_wait(&r->all_read);
	verify_extents(rd);
	return NULL;
}

int ds_restore_result(struct ds_restore *r, char *line, size_t len)
{
	int err = atomic_load(&r->failed_errno);
	if (err == EBADMSG) {
		snprintf(line, len, "the snapshot changed while it was read (its extent table no longer checks)");
		return -EBADMSG;
	}
	stage_die_if_fault(STAGE_MAP_DEST, -err); /* read into a page the filesystem has no room for */
	if (err) {
		snprintf(line, len, "reading page data from the snapshot");
		return -err;
	}
	uint64_t bad = atomic_load(&r->bad_extent);
	if (!bad)
		return 0;
	uint8_t rec[PROTO_SNAP_EXTENT_SIZE];
	struct proto_snap_extent e = { 0 };
	if (ds_extents_read(r->meta_fd, &r->hdr, bad - 1, 1, rec) < 0 ||
	    proto_snap_extent_decode(rec, &r->hdr, &e) != PROTO_OK)
		snprintf(line, len, "snapshot data is corrupt: extent %llu does not match its checksum",
			 (unsigned long long)(bad - 1));
	else
		snprintf(line, len, "snapshot data is corrupt: pages %llu..%llu (extent %llu) do not match their checksum",
			 (unsigned long long)e.first_page, (unsigned long long)(e.first_page + e.n_pages - 1),
			 (unsigned long long)(bad - 1));
	return -EBADMSG;
}
