#include "receiver/rc_restore.h"

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
	return rc_extents_validate(meta_fd, &r->hdr, r->bitmap, why);
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
	stage_sigbus_watch(STAGE_MAP_DEST, r->dest, r->hdr.guest_size, r->dest_fd);
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
	if (!r->dest) /* check only: read into our own buffer, no queue */
		return -posix_memalign((void **)&rd->buf, 4096, RC_CHECK_BUF);
	return dio_queue_init(&rd->queue, RC_RESTORE_DEPTH, read_done, rd);
}

static void publish_progress(struct rc_reader *rd, uint64_t pages)
{
	struct shm_stats *stats = rd->restore->stats;
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_BYTES], rd->bytes_done, memory_order_relaxed);
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_PAGES], pages, memory_order_relaxed);
	rd->bytes_done = 0;
}

static void read_pages(struct rc_reader *rd)
{
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
static int extent_crc(struct rc_reader *rd, const struct proto_snap_extent *e, uint32_t *crc)
{
	struct rc_restore *r = rd->restore;
	const uint64_t page = r->hdr.page_size;
	if (r->dest) {
		*crc = proto_crc32c(0, r->dest + e->first_page * page, e->n_pages * page);
		return 0;
	}
	uint32_t c = 0;
	uint64_t off = r->hdr.data_offset + e->first_page * page, left = e->n_pages * page;
	while (left) {
		uint64_t n = left < RC_CHECK_BUF ? left : RC_CHECK_BUF;
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

static void note_bad(struct rc_restore *r, uint64_t index)
{
	uint64_t cur = atomic_load(&r->bad_extent);
	while ((cur == 0 || index + 1 < cur) &&
	       !atomic_compare_exchange_weak(&r->bad_extent, &cur, index + 1))
		;
}

/* Every extent's CRC.  The table was validated before any page was read;
 * a record is decoded again (range checked) since we read it again. */
static void verify_extents(struct rc_reader *rd)
{
	struct rc_restore *r = rd->restore;
	const uint64_t n_batches = (r->hdr.extent_count + RC_EXTENT_BATCH - 1) / RC_EXTENT_BATCH;
	for (;;) {
		if (atomic_load(&r->failed_errno))
			return;
		uint64_t b = atomic_fetch_add(&r->next_batch, 1);
		if (b >= n_batches)
			return;
		uint64_t first = b * RC_EXTENT_BATCH;
		uint32_t n = (uint32_t)(r->hdr.extent_count - first < RC_EXTENT_BATCH ? r->hdr.extent_count - first
										 : RC_EXTENT_BATCH);
		int rc = rc_extents_read(r->meta_fd, &r->hdr, first, n, rd->records);
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

void *rc_restore_reader(void *arg)
{
	struct rc_reader *rd = arg;
	struct rc_restore *r = rd->restore;
	if (r->dest)
		read_pages(rd);
	/* Every thread gets here, failed or not: a verifier must not read
	 * pages another thread's reads are still filling. */
	pthread_barrier_wait(&r->all_read);
	verify_extents(rd);
	return NULL;
}

int rc_restore_result(struct rc_restore *r, char *line, size_t len)
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
	if (rc_extents_read(r->meta_fd, &r->hdr, bad - 1, 1, rec) < 0 ||
	    proto_snap_extent_decode(rec, &r->hdr, &e) != PROTO_OK)
		snprintf(line, len, "snapshot data is corrupt: extent %llu does not match its checksum",
			 (unsigned long long)(bad - 1));
	else
		snprintf(line, len, "snapshot data is corrupt: pages %llu..%llu (extent %llu) do not match their checksum",
			 (unsigned long long)e.first_page, (unsigned long long)(e.first_page + e.n_pages - 1),
			 (unsigned long long)(bad - 1));
	return -EBADMSG;
}

#define FD_DEST STAGE_FD_GUEST
#define MAX_THREADS 64

static pthread_barrier_t start_line;

static void *reader_main(void *arg)
{
	pthread_barrier_wait(&start_line);
	return rc_restore_reader(arg);
}

int rc_restore_main(int threads, int check_only)
{
	struct shm_segment seg;
	stage_attach_segment(&seg);

	static struct rc_restore r;
	const char *why = "";
	int rc = rc_restore_open(&r, RECEIVER_FD_META, RECEIVER_FD_DATA, check_only ? -1 : FD_DEST, &why);
	if (rc == -EBADMSG)
		stage_die(STAGE_EXIT_FAILED, "snapshot refused: %s", why);
	if (rc < 0)
		stage_die_errno(rc, "%s", why);
	r.stats = shm_segment_stats(&seg, 0);
	stage_stat_set(r.stats, SHM_STAT_FLAGS, r.direct ? SHM_FLAG_DIRECT_IO : 0);
	stage_stat_set(r.stats, SHM_STAT_TOTAL_PAGES, check_only ? r.hdr.pages_present : r.hdr.n_pages);
	if (!check_only && (rc = rc_restore_map_dest(&r, &why)) < 0)
		stage_die_errno(rc, "%s", why);

	static struct rc_reader readers[MAX_THREADS];
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	for (int i = 0; i < threads; i++)
		if ((rc = rc_reader_init(&readers[i], &r)) < 0)
			stage_die_errno(rc, check_only ? "allocating read buffers"
						       : "setting up asynchronous I/O (io_setup)");
	pthread_t tid[MAX_THREADS];
	if ((rc = pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1)) != 0 ||
	    (rc = pthread_barrier_init(&r.all_read, NULL, (unsigned)threads)) != 0)
		stage_die_errno(-rc, "pthread_barrier_init");
	for (int i = 0; i < threads; i++)
		if ((rc = pthread_create(&tid[i], NULL, reader_main, &readers[i])) != 0)
			stage_die_errno(-rc, "starting reader thread %d", i);
	stage_lockdown(SB_ROLE_RECEIVER, RECEIVER_FD_DATA, !check_only);
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	pthread_barrier_wait(&start_line);
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);

	char line[256];
	rc = rc_restore_result(&r, line, sizeof(line));
	if (rc == -EBADMSG)
		stage_die(STAGE_EXIT_FAILED, "%s", line);
	if (rc < 0)
		stage_die_errno(rc, "%s", line);
	if (!check_only && fdatasync(FD_DEST) < 0 && errno != EINVAL)
		stage_die_errno(-errno, "fdatasync of the destination");
	stage_stat_set(r.stats, SHM_STAT_STATE, SHM_PROC_DONE);
	return STAGE_EXIT_OK;
}
