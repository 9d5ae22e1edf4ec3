/* pageferry-worker: zero-checks the pages of each run the scanner gives it
 * and turns the run into exactly one descriptor for the writer, in the form
 * it goes out in: ZERO (no page holds data), RAW (every page does), SPARSE
 * (some do: a page bitmap) or, with zstd, ZSTD (the whole run compressed)
 * or ZSTD_SPARSE (a bitmap and the data pages compressed).
 * Each page found non-zero gets its CRC-32C in the same pass (the page is in
 * cache); the run's record (workers/wk_record.h) in one of its arena buffers
 * carries the data extents' CRCs, the bitmap and the run's
 * contributions to the guest fingerprint table (shm_layout.h), which the
 * writer applies and re-checks at the end.
 *
 * fds (stage/stage_fds.h): 3 control segment, 4 guest (read-only, pread),
 *      5 wake socket of ring scanner -> this worker   (we consume)
 *      6 wake socket of ring this worker -> writer    (we produce)
 *      7 wake socket of ring writer -> this worker    (buffers coming back)
 *      8 its arena (read-write)
 * argv: pageferry-worker --index=I [--zstd-level=LEVEL] [--populate-arena]
 *   --populate-arena: fault the arena in before lock-down (the guest is not
 *   stopped yet: snapshot and migrate --qmp), not run by run in the downtime
 *
 * A run is read (pread) straight into one of our arena buffers and its data
 * pages stay there, packed (a SPARSE run's zero pages left out), for the
 * writer to write or send from; the writer never maps the guest.  A page's
 * first touch through a new mapping costs 3-4 times the copy on the VMs we
 * run on (bench/place_cost.c), and every mapping builds page tables for the
 * whole guest: about 2 MiB per GiB, per process.  (A migration's long
 * pieces still go by sendfile from the guest file: writer/wr_sink_net.c.)
 *
 * One descriptor out per descriptor in (RUN, FENCE, END), and an input slot
 * is released only after its output is published: a replacement for a
 * worker that died (PAGEFERRY_RESTARTED set by the front end) asks the
 * writer how many outputs it took and which buffers it holds, skips the
 * inputs already answered and redoes the rest (doc/architecture.md,
 * "Replacing a stage").
 *
 * The input descriptors come from another process: each is decoded from a
 * private copy and checked against the geometry before the guest is touched.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dio/dio_sync.h"
#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"
#include "workers/wk_arena.h"
#include "workers/wk_record.h"
#include "workers/wk_zero.h"
#include "workers/wk_zstd.h"

#define BURST 32u

struct worker {
	struct shm_segment seg;
	struct proto_geometry geo;
	uint8_t *run;		/* zstd's output before it is copied over the pages; the re-check's pages */
	char shrank[384];	/* the message for a guest file cut short */
	struct shm_ring in, out, back;
	struct shm_stats *stats;
	uint32_t fp_chunk_pages;
	struct proto_crc32c_shift page_shift; /* combines page CRCs into a run's */
	struct shm_slot pending[BURST];
	uint32_t n_pending;
	uint8_t *arena;
	uint64_t frame_size;	/* one run's raw size: a zstd frame's room */
	uint32_t free_buffers[WK_ARENA_BUFFERS], n_free;
	uint8_t is_free[WK_ARENA_BUFFERS];
	struct wk_zstd *zstd;	/* NULL: no compression */
	struct wk_zstd *probe;	/* a page at a time: worth_compressing() */
	struct wk_record_writer rec;
	uint8_t is_zero[WK_RECORD_MAX_PAGES];
	uint32_t crc[WK_RECORD_MAX_PAGES];
};

static void flush(struct worker *w)
{
	int rc = shm_ring_enqueue_all(&w->out, w->pending, w->n_pending);
	if (rc < 0)
		stage_die_ring(rc, "ring to writer");
	w->n_pending = 0;
}

static void push(struct worker *w, const struct proto_desc *d)
{
	if (w->n_pending == BURST)
		flush(w);
	w->pending[w->n_pending++] = proto_desc_pack(d);
}

static void give_back(struct worker *w, uint32_t b)
{
	w->is_free[b] = 1;
	w->free_buffers[w->n_free++] = b;
}

static void take_returns(struct worker *w, const struct shm_slot *batch, int n)
{
	for (int i = 0; i < n; i++) {
		struct proto_desc d;
		enum proto_err err = proto_desc_unpack(batch[i], &w->geo, WK_ARENA_BUFFERS, &d);
		if (err == PROTO_OK && (d.type != PROTO_DESC_BUFFER || w->is_free[d.buffer]))
			err = PROTO_E_DESC_BUFFER;
		if (err != PROTO_OK)
			stage_die(STAGE_EXIT_FAILED, "buffer returned by the writer: %s", proto_strerror(err));
		give_back(w, d.buffer);
	}
}

/* A free arena buffer, waiting for the writer to give one back if needed. */
static uint32_t take_buffer(struct worker *w)
{
	struct shm_slot batch[WK_ARENA_BUFFERS];
	for (;;) {
		int n = shm_ring_dequeue(&w->back, batch, WK_ARENA_BUFFERS, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from writer");
		take_returns(w, batch, n);
		if (w->n_free) {
			uint32_t b = w->free_buffers[--w->n_free];
			w->is_free[b] = 0;
			return b;
		}
		flush(w); /* the writer frees buffers only for descriptors it has seen */
		int rc = shm_ring_wait_ready(&w->back, 1, -1);
		if (rc < 0)
			stage_die_ring(rc, "ring from writer");
	}
}

static uint8_t *frame_of(struct worker *w, uint32_t b)
{
	return w->arena + b * w->frame_size;
}

static uint8_t *record_of(struct worker *w, uint32_t b)
{
	return w->arena + wk_arena_record_offset(w->frame_size, b);
}

/* A run's pages, with pread into our buffer rather than through a mapping
 * of the guest: on the VMs we run on a page's first touch through a new
 * mapping costs more than the copy (dest/ds_place.h), and a mapping would
 * build page tables for the whole guest in every worker.  The buffer stays
 * in cache for the zero check, the CRCs and zstd. */
static uint8_t *read_run(struct worker *w, uint8_t *into, uint64_t first, uint32_t n)
{
	int rc = dio_pread_full(STAGE_FD_GUEST, into, (uint64_t)n * w->geo.page_size, first * w->geo.page_size);
	if (rc == -ENODATA)
		stage_die(STAGE_EXIT_FAILED, "%s", w->shrank);
	if (rc < 0)
		stage_die_errno(rc, "reading guest pages %llu..%llu", (unsigned long long)first,
				(unsigned long long)(first + n - 1));
	return into;
}

/* Zero-check every page of a run read into pages (early exit on the first
 * non-zero line); a page that is not zero gets its CRC, and its fingerprint
 * goes into its chunk's contribution: one record entry per chunk the run
 * touches. */
static uint32_t check_pages(struct worker *w, const uint8_t *pages, uint64_t first, uint32_t n,
			    struct wk_record_writer *rec, _Atomic uint64_t *table)
{
	const size_t page = w->geo.page_size;
	uint32_t zero_pages = 0;
	uint64_t fp = 0, chunk = first / w->fp_chunk_pages;
	for (uint32_t k = 0; k <= n; k++) {
		uint64_t c = k < n ? (first + k) / w->fp_chunk_pages : chunk + 1;
		if (c != chunk) {
			if (fp && rec)
				wk_record_add_fp(rec, chunk, fp);
			if (fp && table)
				atomic_fetch_xor_explicit(&table[chunk], fp, memory_order_relaxed);
			fp = 0;
			chunk = c;
		}
		if (k == n)
			break;
		const uint8_t *p = pages + (size_t)k * page;
		w->is_zero[k] = (uint8_t)wk_page_is_zero(p, page);
		if (w->is_zero[k]) {
			zero_pages++;
			continue;
		}
		w->crc[k] = proto_crc32c(0, p, page);
		fp ^= shm_fp_mix(first + k, w->crc[k]);
	}
	return zero_pages;
}

/* A run's n_data data pages (packed: zero pages are left out, in buffer b)
 * as one zstd frame, written into w->run and copied over the pages (it is
 * smaller), followed by the packet's CRC-32C: over the bitmap (none when no
 * page is zero), then the frame.  Returns the frame's length, or 0 when the
 * pages do not shrink by more than the CRC's 4 bytes. */
static uint32_t compress_run(struct worker *w, uint32_t b, uint32_t n_data, const uint8_t *bitmap,
			     uint32_t bitmap_bytes)
{
	size_t raw = (size_t)n_data * w->geo.page_size;
	uint8_t *frame = frame_of(w, b);
	size_t len = wk_zstd_compress(w->zstd, w->run, frame, raw, raw - PROTO_DESC_FRAME_CRC_BYTES);
	if (!len)
		return 0;
	memcpy(frame, w->run, len);
	put_le32(frame + len, proto_crc32c(proto_crc32c(0, bitmap, bitmap_bytes), frame, len));
	return (uint32_t)len;
}

/* zstd spends nearly as long on pages that do not shrink as on pages that
 * do, and a guest's incompressible pages (encrypted or compressed data)
 * come in long stretches.  So before a run is compressed, up to three of
 * its data pages (the first, one from the middle, the last) are compressed
 * alone; when none of them shrinks by an eighth, the run goes out RAW or
 * SPARSE untried.  A run of mixed pages almost always has one that
 * shrinks.  The probes have their own small context: alternating sizes
 * on one context would make zstd resize its workspace, which allocates. */
static bool worth_compressing(struct worker *w, uint8_t *scratch, const uint8_t *pages, uint32_t n)
{
	const size_t page = w->geo.page_size;
	uint32_t data[WK_RECORD_MAX_PAGES], n_data = 0;
	for (uint32_t k = 0; k < n; k++)
		if (!w->is_zero[k])
			data[n_data++] = k;
	const uint32_t probes[3] = { data[0], data[n_data / 2], data[n_data - 1] };
	for (uint32_t i = 0; i < 3 && i < n_data; i++)
		if (wk_zstd_compress(w->probe, scratch, pages + (size_t)probes[i] * page, page, page - page / 8))
			return true;
	return false;
}

/* A run's data pages moved down over the zero pages before them, in order,
 * as a SPARSE packet carries them and as zstd compresses them. */
static void pack_data_pages(struct worker *w, uint8_t *pages, uint32_t n)
{
	const size_t page = w->geo.page_size;
	uint32_t to = 0;
	for (uint32_t k = 0; k < n; k++) {
		if (w->is_zero[k])
			continue;
		uint32_t len = 1;
		while (k + len < n && !w->is_zero[k + len])
			len++;
		if (to != k)
			memmove(pages + (size_t)to * page, pages + (size_t)k * page, (size_t)len * page);
		to += len;
		k += len - 1;
	}
}

/* One run in, one descriptor out. */
static void check_run(struct worker *w, uint64_t first, uint32_t n)
{
	struct wk_record_writer *rec = &w->rec;
	wk_record_start(rec, NULL);
	/* The pages go where they will be written or sent from: a zero run
	 * gives its buffer straight back. */
	uint32_t b = take_buffer(w);
	uint8_t *pages = read_run(w, frame_of(w, b), first, n);
	uint32_t zero_pages = check_pages(w, pages, first, n, rec, NULL);
	stage_stat_add(w->stats, SHM_STAT_PAGES, n);
	stage_stat_add(w->stats, SHM_STAT_ZERO_PAGES, zero_pages);
	stage_stat_add(w->stats, SHM_STAT_RUNS, 1);
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = PROTO_ENC_ZERO, .first_page = first,
				.n_pages = n };
	if (zero_pages == n) {
		give_back(w, b);
		push(w, &d);
		return;
	}
	rec->rec = record_of(w, b);
	d.buffer = (uint16_t)b;
	/* A run with zero pages carries a bitmap of its data pages. */
	uint8_t bitmap[PROTO_SPARSE_BITMAP_MAX];
	uint32_t bitmap_bytes = zero_pages ? proto_sparse_bitmap_bytes(n) : 0;
	memset(bitmap, 0, bitmap_bytes);
	for (uint32_t k = 0; k < n && zero_pages; k++)
		if (!w->is_zero[k])
			bitmap[k / 8] |= (uint8_t)(1u << (k % 8));
	bool compress = w->zstd && worth_compressing(w, w->run, pages, n);
	/* The data pages packed together: zstd gets them only (zero pages
	 * would cost it time here and the inflater a decompression and a write
	 * there), and a SPARSE packet carries them so. */
	if (zero_pages)
		pack_data_pages(w, pages, n);
	if (compress) {
		uint32_t len = compress_run(w, b, n - zero_pages, bitmap, bitmap_bytes);
		if (len) {
			d.encoding = zero_pages ? PROTO_ENC_ZSTD_SPARSE : PROTO_ENC_ZSTD;
			d.payload_len = len;
			wk_record_finish(rec, zero_pages ? bitmap : NULL, bitmap_bytes);
			push(w, &d);
			return;
		}
	}
	/* Data extents' CRCs, and for SPARSE the packet's CRC over bitmap then
	 * data pages: crc(A || page) from crc(A) and crc(page). */
	uint32_t packet_crc = proto_crc32c(0, bitmap, bitmap_bytes), extent_crc = 0;
	for (uint32_t k = 0; k < n; k++) {
		if (w->is_zero[k])
			continue;
		if (k == 0 || w->is_zero[k - 1])
			extent_crc = 0;
		extent_crc = proto_crc32c_shift_combine(&w->page_shift, extent_crc, w->crc[k]);
		packet_crc = proto_crc32c_shift_combine(&w->page_shift, packet_crc, w->crc[k]);
		if (k + 1 == n || w->is_zero[k + 1])
			wk_record_add_extent(rec, extent_crc);
	}
	d.encoding = zero_pages ? PROTO_ENC_SPARSE : PROTO_ENC_RAW;
	d.payload_len = packet_crc; /* RAW: the pages' CRC; SPARSE: bitmap and pages' */
	wk_record_finish(rec, zero_pages ? bitmap : NULL, bitmap_bytes);
	push(w, &d);
}

/* After END: the writer may ask us to fingerprint the guest's data pages
 * once more, XORing into the table itself (writer/wr_recheck.h): a guest
 * that did not change brings every chunk back to 0.  The workers share
 * the pass.  Buffers that come back meanwhile need
 * no more bookkeeping. */
static void recheck_when_asked(struct worker *w)
{
	_Atomic uint64_t *table = shm_segment_fingerprints(&w->seg);
	struct shm_slot batch[BURST];
	for (;;) {
		int n = shm_ring_dequeue(&w->back, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from writer");
		if (n == 0) {
			int rc = shm_ring_wait_ready(&w->back, 1, -1);
			if (rc < 0)
				stage_die_ring(rc, "ring from writer");
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct proto_desc d;
			enum proto_err err = proto_desc_unpack(batch[i], &w->geo, WK_ARENA_BUFFERS, &d);
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "descriptor from writer: %s", proto_strerror(err));
			if (d.type == PROTO_DESC_RECHECK) {
				check_pages(w, read_run(w, w->run, d.first_page, d.n_pages), d.first_page,
					    d.n_pages, NULL, table);
			} else if (d.type == PROTO_DESC_RECHECK_END) {
				struct proto_desc done = { .type = PROTO_DESC_RECHECKED };
				push(w, &done);
				flush(w);
				return;
			} else if (d.type != PROTO_DESC_BUFFER) {
				stage_die(STAGE_EXIT_FAILED, "descriptor from writer: unexpected type %u", d.type);
			}
		}
	}
}

/* A replacement: the writer took every output the worker before us
 * published (they precede our RESYNC on the ring); it answers how many, and
 * which of our buffers it still holds.  Inputs up to that count were
 * answered: release them; the rest are ours to do. */
static void resync(struct worker *w)
{
	struct proto_desc ask = { .type = PROTO_DESC_RESYNC };
	push(w, &ask);
	flush(w);
	struct shm_slot slot;
	for (;;) {
		int n = shm_ring_dequeue(&w->back, &slot, 1, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from writer");
		if (n == 0) {
			if ((n = shm_ring_wait_ready(&w->back, 1, -1)) < 0)
				stage_die_ring(n, "ring from writer");
			continue;
		}
		struct proto_desc d;
		enum proto_err err = proto_desc_unpack(slot, &w->geo, WK_ARENA_BUFFERS, &d);
		if (err != PROTO_OK)
			stage_die(STAGE_EXIT_FAILED, "descriptor from writer: %s", proto_strerror(err));
		if (d.type == PROTO_DESC_RECHECK || d.type == PROTO_DESC_RECHECK_END)
			stage_die(STAGE_EXIT_FAILED, "the worker this one replaces died in the final re-check, "
						     "which cannot be resumed");
		if (d.type == PROTO_DESC_BUFFER)
			continue; /* given back to the worker before us: covered by the answer */
		if (d.type != PROTO_DESC_RESYNCED)
			stage_die(STAGE_EXIT_FAILED, "descriptor from writer: unexpected type %u", d.type);
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++)
			if (!(d.payload_len >> b & 1))
				give_back(w, b);
		uint32_t released = atomic_load_explicit(&w->in.ctrl->head, memory_order_relaxed);
		uint32_t answered = (uint32_t)d.first_page - released;
		int64_t ready = shm_ring_ready_count(&w->in);
		if (ready < 0 || answered > (uint64_t)ready)
			stage_die(STAGE_EXIT_FAILED, "the writer took %llu outputs, but %u inputs were released "
						     "and %lld are waiting",
				  (unsigned long long)d.first_page, released, (long long)ready);
		shm_ring_release(&w->in, answered);
		return;
	}
}

int main(int argc, char **argv)
{
	struct worker w = { 0 };
	stage_set_name("worker", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, "pageferry-worker --index=I [--zstd-level=LEVEL] [--populate-arena]");
	uint64_t index64 = stage_arg_u64("index", 0, SHM_MAX_WORKERS - 1);
	int level = (int)stage_arg_u64_or("zstd-level", 1, 19, 0);
	bool populate = stage_arg_flag("populate-arena");
	stage_args_done();
	bool replacement = getenv("PAGEFERRY_RESTARTED") != NULL;
	stage_close_inherited_fds(WORKER_FD_ARENA, NULL, 0);
	stage_attach_segment(&w.seg);
	if (index64 >= w.seg.geo.n_workers)
		stage_die(STAGE_EXIT_USAGE, "--index=%llu, but the segment has %u workers",
			  (unsigned long long)index64, w.seg.geo.n_workers);
	uint32_t index = (uint32_t)index64;
	stage_set_name("worker", (int)index);
	w.geo = (struct proto_geometry){ .page_size = w.seg.geo.page_size,
					 .max_run_pages = w.seg.geo.max_run_pages,
					 .guest_pages = w.seg.geo.guest_pages };
	stage_fault_describe(STAGE_MAP_GUEST, STAGE_FD_GUEST, w.geo.guest_pages * w.geo.page_size, w.shrank,
			     sizeof(w.shrank));
	w.stats = shm_segment_stats(&w.seg, SHM_STATS_WORKER0 + index);
	w.fp_chunk_pages = w.seg.fp_chunk_pages;
	proto_crc32c_shift_init(&w.page_shift, w.geo.page_size);
	stage_ring(&w.seg, SHM_RING_SCAN_TO_WORKER, index, WORKER_FD_IN, &w.in);
	stage_ring(&w.seg, SHM_RING_WORKER_TO_WRITER, index, WORKER_FD_OUT, &w.out);
	stage_ring(&w.seg, SHM_RING_WRITER_TO_WORKER, index, WORKER_FD_BACK, &w.back);
	w.frame_size = (uint64_t)w.geo.max_run_pages * w.geo.page_size;
	/* zstd's output and the re-check's reads.  Page-aligned: the zero check
	 * reads whole 32-byte vectors.  Not touched ahead: most jobs use neither
	 * (dest/inflater_main.c says why that is safe). */
	w.run = aligned_alloc(4096, w.frame_size);
	if (!w.run)
		stage_die_errno(-ENOMEM, "a buffer for one run");
	w.arena = stage_map_arena(WORKER_FD_ARENA, wk_arena_source_size(w.frame_size), 1);
	if (populate)
		stage_populate(w.arena, wk_arena_source_size(w.frame_size), 1, "the arena");
	if (level) {
		w.zstd = wk_zstd_new(level, w.frame_size);
		w.probe = wk_zstd_new(level, w.geo.page_size);
		if (!w.zstd || !w.probe)
			stage_die(STAGE_EXIT_FAILED, "setting up zstd level %d", level);
	}
	stage_lockdown(SB_ROLE_WORKER, WORKER_FD_ARENA, 0);
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	if (replacement)
		resync(&w);
	else
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++)
			give_back(&w, b);

	struct shm_slot batch[BURST];
	for (;;) {
		int n = shm_ring_peek(&w.in, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from scanner");
		if (n == 0) {
			int rc = shm_ring_wait_ready(&w.in, 1, -1);
			if (rc < 0)
				stage_die_ring(rc, "ring from scanner");
			continue;
		}
		bool ended = false;
		for (int i = 0; i < n && !ended; i++) {
			struct proto_desc d;
			enum proto_err err = proto_desc_unpack(batch[i], &w.geo, 0, &d);
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "descriptor from scanner: %s", proto_strerror(err));
			if (d.type == PROTO_DESC_RUN) {
				stage_test_hook("worker");
				check_run(&w, d.first_page, d.n_pages);
			} else if (d.type == PROTO_DESC_FENCE) {
				/* End of a pre-copy round: the writer holds our later
				 * descriptors until every worker has reached it. */
				push(&w, &d);
			} else if (d.type == PROTO_DESC_END) {
				struct proto_desc end = { .type = PROTO_DESC_END };
				push(&w, &end);
				n = i + 1;
				ended = true;
			} else {
				stage_die(STAGE_EXIT_FAILED, "descriptor from scanner: unexpected type %u", d.type);
			}
		}
		/* Outputs published, then the inputs they answer released. */
		flush(&w);
		shm_ring_release(&w.in, (uint32_t)n);
		if (ended) {
			recheck_when_asked(&w);
			/* Our XORs reached the writer with RECHECKED (ring
			 * release); DONE only tells it the re-check was had. */
			stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_DONE);
			return STAGE_EXIT_OK;
		}
	}
}
