#include "dest/ds_restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio/dio_sync.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_error.h"
#include "stage/stage.h"

/* The absent pages' pass claims the page space in chunks: big enough that
 * claiming is rare, small enough that work spreads evenly. */
#define CHUNK_BYTES (4u << 20)

int ds_restore_open(struct ds_restore *r, int meta_fd, int data_fd, const char **why)
{
	memset(r, 0, sizeof(*r));
	r->meta_fd = meta_fd;
	r->data_fd = data_fd;
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

int ds_restore_open_dest(struct ds_restore *r, struct ds_place *pl, int dest_fd, const char **why)
{
	if (!r->in_place && ftruncate(dest_fd, (off_t)r->hdr.guest_size) < 0) {
		*why = "sizing the destination";
		return -errno;
	}
	ds_place_open(pl, dest_fd, r->hdr.guest_size);
	r->dest = pl;
	return 0;
}

static void fail(struct ds_restore *r, int neg_errno, uint64_t off, uint64_t len)
{
	int none = 0;
	if (atomic_compare_exchange_strong(&r->failed_errno, &none, -neg_errno)) {
		atomic_store(&r->failed_off, off);
		atomic_store(&r->failed_len, len);
	}
}

static void note_bad(struct ds_restore *r, uint64_t index)
{
	uint64_t cur = atomic_load(&r->bad_extent);
	while ((cur == 0 || index + 1 < cur) && !atomic_compare_exchange_weak(&r->bad_extent, &cur, index + 1))
		;
}

static void publish_progress(struct ds_reader *rd)
{
	struct shm_stats *stats = rd->restore->stats;
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_BYTES], rd->bytes_done, memory_order_relaxed);
	atomic_fetch_add_explicit(&stats->v[SHM_STAT_PAGES], rd->pages_done, memory_order_relaxed);
	rd->bytes_done = rd->pages_done = 0;
}

static void extent_done(struct ds_reader *rd, uint32_t x)
{
	struct ds_open_extent *e = &rd->open[x];
	if (e->acc != e->want)
		note_bad(rd->restore, e->index);
	rd->pages_done += e->n_pages;
	rd->free_open[rd->n_free_open++] = x;
}

/* The n slots from first, of a piece that is done or was never submitted. */
static void give_back_slots(struct ds_reader *rd, uint32_t first, uint32_t n)
{
	rd->free_slots |= ((1ull << n) - 1) << first;
	if (n > 1)
		rd->long_pending--;
}

/* A piece is in: its CRC goes into its extent's, its pages to the
 * destination (written before the extent is known good: a bad one fails
 * the restore, and the front end removes what it wrote). */
static void piece_done(void *ctx, uint64_t tag, uint64_t len)
{
	struct ds_reader *rd = ctx;
	struct ds_restore *r = rd->restore;
	struct ds_piece *p = &rd->piece[tag];
	uint32_t crc = proto_crc32c(0, p->buf, len);
	struct ds_open_extent *e = &rd->open[p->extent];
	e->acc ^= p->after ? proto_crc32c_combine(crc, 0, p->after) : crc;
	if (r->dest && !r->dest->map) {
		int rc = ds_place_write(r->dest, p->buf, len, p->dest_off);
		if (rc < 0)
			fail(r, rc, p->dest_off, len);
	}
	rd->bytes_done += len;
	give_back_slots(rd, (uint32_t)tag, p->slots);
	if (--e->pending == 0 && !e->submitting)
		extent_done(rd, p->extent);
}

int ds_reader_init(struct ds_reader *rd, struct ds_restore *r)
{
	memset(rd, 0, sizeof(*rd));
	rd->restore = r;
	/* Few reads to make: one at a time, one buffer (ds_restore_sync). */
	const bool sync = ds_restore_sync(&r->hdr);
	const uint32_t n_bufs = sync ? 1 : DS_RESTORE_DEPTH;
	rd->free_slots = sync ? 1 : ~0ull;
	rd->max_slots = sync ? 1 : DS_RESTORE_LONG_SLOTS;
	for (uint32_t i = 0; i < DS_RESTORE_DEPTH + 1; i++)
		rd->free_open[rd->n_free_open++] = i;
	rd->queue.notify_fd = -1;
	/* Nothing to read (an all-zero or empty guest): no buffers and no
	 * asynchronous I/O context, whose teardown holds a process's exit for
	 * an RCU grace period (~31 ms here, doc/benchmarks.md "Start-up
	 * cost"); the reader only places absent pages. */
	if (r->hdr.extent_count == 0)
		return 0;
	int rc = 0;
	/* Not touched here: a read faults in only the pages it fills, and most
	 * of the 8 MiB is never used (a random guest's 1 MiB extents use 2 MiB
	 * of slots, a mixed guest's short ones a page or three of each 128 KiB
	 * slot), while this VM takes ~3 ms to back each MiB touched for the
	 * first time (doc/benchmarks.md, "Restore buffers not touched ahead"). */
	if (!(r->dest && r->dest->map)) /* mapped: read straight into it */
		rc = -posix_memalign((void **)&rd->bufs, 4096, (size_t)n_bufs * DS_RESTORE_PIECE);
	if (rc == 0 && sync)
		dio_queue_init_sync(&rd->queue, piece_done, rd);
	else if (rc == 0)
		rc = dio_queue_init(&rd->queue, DS_RESTORE_DEPTH, piece_done, rd);
	return rc;
}

bool ds_restore_sync(const struct proto_snap_header *h)
{
	/* Reads of at most a piece each, at least one per extent. */
	uint64_t reads = h->extent_count + h->pages_present * h->page_size / DS_RESTORE_PIECE;
	return reads <= DS_RESTORE_SYNC_READS;
}

_Static_assert(DS_RESTORE_DEPTH == 64 && DS_RESTORE_DEPTH % DS_RESTORE_LONG_SLOTS == 0,
	       "slots are the bits of one uint64_t, in groups of a long piece's");

/* The first of n adjacent free slots inside one group of
 * DS_RESTORE_LONG_SLOTS, taken; or -1.  A single slot comes from a group
 * already in use where there is one, so that whole groups stay free for
 * long pieces. */
static int take_slots(struct ds_reader *rd, uint32_t n)
{
	const uint64_t group_mask = (1ull << DS_RESTORE_LONG_SLOTS) - 1, want = (1ull << n) - 1;
	int whole_group = -1;
	for (uint32_t g = 0; g < DS_RESTORE_DEPTH; g += DS_RESTORE_LONG_SLOTS) {
		const uint64_t group = (rd->free_slots >> g) & group_mask;
		for (uint32_t s = 0; s + n <= DS_RESTORE_LONG_SLOTS; s++) {
			if (((group >> s) & want) != want)
				continue;
			if (n == 1 && group == group_mask) {
				if (whole_group < 0)
					whole_group = (int)g;
				break;
			}
			rd->free_slots &= ~(want << (g + s));
			return (int)(g + s);
		}
	}
	if (whole_group >= 0)
		rd->free_slots &= ~(want << whole_group);
	return whole_group;
}

/* One extent's pages, piece by piece; returns -errno if a read failed. */
static int read_extent(struct ds_reader *rd, uint64_t index, const struct proto_snap_extent *x)
{
	struct ds_restore *r = rd->restore;
	const uint64_t start = x->first_page * r->hdr.page_size, bytes = x->n_pages * r->hdr.page_size;
	uint32_t o = rd->free_open[--rd->n_free_open]; /* one more than the pieces in flight */
	rd->open[o] = (struct ds_open_extent){ .index = index, .n_pages = x->n_pages, .want = x->crc,
					       .submitting = true };
	const bool mapped = r->dest && r->dest->map;
	int rc = 0;
	for (uint64_t done = 0; done < bytes && rc == 0;) {
		/* Mapped: up to the end of the destination's 2 MiB page. */
		uint64_t room = mapped ? DS_RESTORE_MAPPED_PIECE - (start + done) % DS_RESTORE_MAPPED_PIECE
				       : (uint64_t)rd->max_slots * DS_RESTORE_PIECE;
		uint64_t len = bytes - done < room ? bytes - done : room;
		uint32_t n = mapped ? 1 : (uint32_t)((len + DS_RESTORE_PIECE - 1) / DS_RESTORE_PIECE);
		int b = -1;
		/* Waiting frees slots: every taken one belongs to a read in flight. */
		while (rc == 0 && ((n > 1 && rd->long_pending >= DS_RESTORE_LONG_DEPTH) || (b = take_slots(rd, n)) < 0))
			rc = dio_queue_wait(&rd->queue);
		if (rc < 0)
			break;
		uint8_t *into = mapped ? r->dest->map + start + done : rd->bufs + (uint64_t)b * DS_RESTORE_PIECE;
		rd->piece[b] = (struct ds_piece){ .extent = o, .len = len, .after = bytes - done - len,
						  .dest_off = start + done, .slots = n, .buf = into };
		rd->open[o].pending++;
		if (n > 1)
			rd->long_pending++;
		rc = dio_queue_submit(&rd->queue, DIO_READ, r->data_fd, into, len, r->hdr.data_offset + start + done,
				      (uint64_t)b);
		if (rc < 0) {
			rd->open[o].pending--;
			give_back_slots(rd, (uint32_t)b, n);
		}
		done += len;
	}
	rd->open[o].submitting = false;
	if (rd->open[o].pending == 0)
		extent_done(rd, o);
	return rc;
}

/* The data pass: batches of extent records, decoded again (range checked:
 * the table was validated before, but this is a second read). */
static void read_extents(struct ds_reader *rd)
{
	struct ds_restore *r = rd->restore;
	const uint64_t n_batches = (r->hdr.extent_count + DS_EXTENT_BATCH - 1) / DS_EXTENT_BATCH;
	int rc = 0;
	while (rc == 0 && !atomic_load(&r->failed_errno)) {
		uint64_t b = atomic_fetch_add(&r->next_batch, 1);
		if (b >= n_batches)
			break;
		uint64_t first = b * DS_EXTENT_BATCH;
		uint32_t n = (uint32_t)(r->hdr.extent_count - first < DS_EXTENT_BATCH ? r->hdr.extent_count - first
										 : DS_EXTENT_BATCH);
		rc = ds_extents_read(r->meta_fd, &r->hdr, first, n, rd->records);
		for (uint32_t k = 0; rc == 0 && k < n; k++) {
			struct proto_snap_extent x;
			if (proto_snap_extent_decode(rd->records + k * PROTO_SNAP_EXTENT_SIZE, &r->hdr, &x) != PROTO_OK)
				rc = -EBADMSG; /* it was valid a moment ago: the file changed */
			else
				rc = read_extent(rd, first + k, &x);
		}
		publish_progress(rd);
	}
	int drained = dio_queue_drain(&rd->queue);
	if (rc == 0)
		rc = drained;
	if (rc < 0)
		fail(r, rc, UINT64_MAX, 0);
	publish_progress(rd);
}

/* The absent pages' pass (restore only): in place they may hold anything
 * and become holes (zeros where the filesystem cannot punch); a new
 * destination is holes already.  Either way they count as restored. */
static void absent_pages(struct ds_reader *rd)
{
	struct ds_restore *r = rd->restore;
	const uint64_t page = r->hdr.page_size;
	const uint64_t chunk_pages = CHUNK_BYTES / page ? CHUNK_BYTES / page : 1;
	const uint64_t n_chunks = (r->hdr.n_pages + chunk_pages - 1) / chunk_pages;
	while (!atomic_load(&r->failed_errno)) {
		uint64_t c = atomic_fetch_add(&r->next_chunk, 1);
		if (c >= n_chunks)
			break;
		uint64_t p = c * chunk_pages, end = p + chunk_pages < r->hdr.n_pages ? p + chunk_pages : r->hdr.n_pages;
		while (p < end) {
			while (p < end && proto_bitmap_test(r->bitmap, p))
				p++;
			uint64_t absent = p;
			while (p < end && !proto_bitmap_test(r->bitmap, p))
				p++;
			int rc = r->in_place && !r->dest_zeroed && p > absent
					 ? ds_place_punch(r->dest, absent * page, (p - absent) * page)
					 : 0;
			if (rc < 0) {
				fail(r, rc, absent * page, (p - absent) * page);
				return;
			}
			rd->pages_done += p - absent;
		}
		publish_progress(rd);
	}
}

void *ds_restore_reader(void *arg)
{
	struct ds_reader *rd = arg;
	if (rd->restore->dest)
		absent_pages(rd);
	read_extents(rd);
	return NULL;
}

int ds_restore_result(struct ds_restore *r, char *line, size_t len)
{
	int err = atomic_load(&r->failed_errno);
	uint64_t off = atomic_load(&r->failed_off), page = r->hdr.page_size;
	if (err == EBADMSG) {
		snprintf(line, len, "the snapshot changed while it was read (its extent table no longer checks)");
		return -1;
	}
	/* EFAULT from a read straight into a mapped destination: a page its
	 * filesystem could not allocate, whichever read it was. */
	if (err && r->dest && (off != UINT64_MAX || (err == EFAULT && r->dest->map))) {
		uint64_t n = atomic_load(&r->failed_len);
		ds_place_failure(r->dest, -err, off / page, (n + page - 1) / page, line, len);
		return -1;
	}
	if (err) {
		snprintf(line, len, "reading page data from the snapshot: %s", strerror(err));
		return -1;
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
	return -1;
}
