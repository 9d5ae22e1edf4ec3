/* pageferry-worker: zero-checks the pages of each run it is given and tells
 * the writer which sub-runs hold data and which are zero.  Each page found
 * non-zero gets its CRC-32C in the same pass (the page is in cache): the
 * page CRCs are combined into each RAW sub-run's CRC (carried in the
 * descriptor's payload_len) and XORed into the guest fingerprint table
 * (shm_layout.h), which the writer re-checks at the end.
 *
 * fds (stage/stage_fds.h): 3 control segment, 4 guest (read-only),
 *      5 wake socket of ring scanner -> this worker   (we consume)
 *      6 wake socket of ring this worker -> writer    (we produce)
 *      7 wake socket of ring writer -> this worker    (buffers coming back)
 *      8 its arena (read-write), only with zstd
 * argv: pageferry-worker --index=I [--zstd-level=LEVEL]
 *
 * With zstd, each run that holds data is compressed whole (zero pages
 * included) into a free arena buffer; a frame that is not smaller than its
 * pages is dropped and the run goes out split into raw and zero sub-runs.
 * Buffers come back from the writer on the return ring once sent.
 *
 * The input descriptors come from another process: each is decoded from a
 * private copy and checked against the geometry before the guest is touched.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "workers/wk_arena.h"
#include "workers/wk_zero.h"
#include "workers/wk_zstd.h"

#define BURST 32u

struct worker {
	struct shm_segment seg;
	struct proto_geometry geo;
	const uint8_t *guest;
	struct shm_ring in, out, back;
	struct shm_stats *stats;
	_Atomic uint64_t *fingerprints;
	uint32_t fp_chunk_pages;
	struct proto_crc32c_shift page_shift; /* combines page CRCs into a run's */
	struct shm_slot pending[BURST * 2];
	uint32_t n_pending;
	/* zstd only */
	struct wk_zstd *zstd;
	uint8_t *arena;
	uint64_t buffer_size;
	uint32_t free_buffers[WK_ARENA_BUFFERS], n_free;
	uint8_t is_free[WK_ARENA_BUFFERS];
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
	w->pending[w->n_pending++] = proto_desc_pack(d);
	if (w->n_pending == sizeof(w->pending) / sizeof(w->pending[0]))
		flush(w);
}

/* Take back the buffers the writer is done with.  wait: sleep until one. */
static void collect_buffers(struct worker *w, int wait)
{
	struct shm_slot batch[WK_ARENA_BUFFERS];
	for (;;) {
		int n = shm_ring_dequeue(&w->back, batch, WK_ARENA_BUFFERS, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from writer");
		for (int i = 0; i < n; i++) {
			struct proto_desc d;
			enum proto_err err = proto_desc_unpack(batch[i], &w->geo, WK_ARENA_BUFFERS, &d);
			if (err == PROTO_OK && (d.type != PROTO_DESC_BUFFER || w->is_free[d.buffer]))
				err = PROTO_E_DESC_BUFFER;
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "buffer returned by the writer: %s", proto_strerror(err));
			w->is_free[d.buffer] = 1;
			w->free_buffers[w->n_free++] = d.buffer;
		}
		if (n > 0 || !wait)
			return;
		flush(w); /* the writer frees buffers only for descriptors it has seen */
		int rc = shm_ring_wait_ready(&w->back, 1, -1);
		if (rc < 0)
			stage_die_ring(rc, "ring from writer");
	}
}

static void emit(struct worker *w, uint8_t encoding, uint64_t first, uint32_t n, uint32_t crc)
{
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = encoding, .first_page = first,
				.n_pages = n, .payload_len = encoding == PROTO_ENC_RAW ? crc : 0 };
	push(w, &d);
}

/* The whole run as one zstd frame, zero pages included (zstd turns them
 * into a few bytes, and one frame per run costs far less than one per data
 * sub-run), followed by the frame's CRC-32C.  Returns 0 when the run does
 * not shrink by more than the CRC's 4 bytes. */
static int emit_compressed(struct worker *w, uint64_t first, uint32_t n)
{
	if (w->n_free == 0)
		collect_buffers(w, 1);
	uint32_t b = w->free_buffers[--w->n_free];
	size_t raw = (size_t)n * w->geo.page_size;
	uint8_t *frame = w->arena + b * w->buffer_size;
	size_t len = wk_zstd_compress(w->zstd, frame, w->guest + first * w->geo.page_size, raw,
				      raw - PROTO_DESC_FRAME_CRC_BYTES);
	stage_stat_add(w->stats, SHM_STAT_IN_BYTES, raw);
	if (!len) {
		w->n_free++;
		return 0;
	}
	put_le32(frame + len, proto_crc32c(0, frame, len));
	w->is_free[b] = 0;
	stage_stat_add(w->stats, SHM_STAT_OUT_BYTES, len);
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = PROTO_ENC_ZSTD, .first_page = first,
				.n_pages = n, .buffer = (uint16_t)b, .payload_len = (uint32_t)len };
	push(w, &d);
	return 1;
}

/* Zero-check every page (early exit on the first non-zero line); a page
 * that is not zero gets its CRC, and its fingerprint goes into its chunk's
 * slot: one atomic XOR per chunk the run touches, not one per page. */
static uint64_t check_pages(struct worker *w, uint64_t first, uint32_t n, uint8_t *is_zero, uint32_t *crc)
{
	const size_t page = w->geo.page_size;
	uint64_t zero_pages = 0, fp = 0, chunk = first / w->fp_chunk_pages;
	for (uint32_t k = 0; k < n; k++) {
		const uint8_t *p = w->guest + (first + k) * page;
		uint64_t c = (first + k) / w->fp_chunk_pages;
		if (c != chunk) {
			if (fp)
				atomic_fetch_xor_explicit(&w->fingerprints[chunk], fp, memory_order_relaxed);
			fp = 0;
			chunk = c;
		}
		is_zero[k] = (uint8_t)wk_page_is_zero(p, page);
		if (is_zero[k]) {
			zero_pages++;
			continue;
		}
		crc[k] = proto_crc32c(0, p, page);
		fp ^= shm_fp_mix(first + k, crc[k]);
	}
	if (fp)
		atomic_fetch_xor_explicit(&w->fingerprints[chunk], fp, memory_order_relaxed);
	return zero_pages;
}

/* Split a run into maximal sub-runs of data pages and of zero pages. */
static void check_run(struct worker *w, uint64_t first, uint32_t n)
{
	static uint8_t is_zero[4096];
	static uint32_t crc[4096];
	uint64_t zero_pages = check_pages(w, first, n, is_zero, crc);
	stage_stat_add(w->stats, SHM_STAT_PAGES, n);
	stage_stat_add(w->stats, SHM_STAT_ZERO_PAGES, zero_pages);
	stage_stat_add(w->stats, SHM_STAT_RUNS, 1);
	if (w->zstd && zero_pages < n && emit_compressed(w, first, n))
		return;
	uint64_t run_start = first;
	int run_zero = -1;
	uint32_t run_crc = 0;
	for (uint64_t p = first; p < first + n; p++) {
		int zero = is_zero[p - first];
		if (zero != run_zero && run_zero >= 0) {
			emit(w, run_zero ? PROTO_ENC_ZERO : PROTO_ENC_RAW, run_start, (uint32_t)(p - run_start),
			     run_crc);
			run_start = p;
			run_crc = 0;
		}
		run_zero = zero;
		if (!zero) /* crc(A || page) from crc(A) and crc(page) */
			run_crc = proto_crc32c_shift_combine(&w->page_shift, run_crc, crc[p - first]);
	}
	emit(w, run_zero ? PROTO_ENC_ZERO : PROTO_ENC_RAW, run_start, (uint32_t)(first + n - run_start), run_crc);
}

/* After END: the writer may ask us to fingerprint the guest's data pages
 * once more, XORing into the same chunks (writer/wr_recheck.h): a guest
 * that did not change brings every chunk back to 0.  Our mapping is warm,
 * and the workers share the pass.  Buffers that come back meanwhile need
 * no more bookkeeping. */
static void recheck_when_asked(struct worker *w)
{
	static uint8_t is_zero[4096];
	static uint32_t crc[4096];
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
				check_pages(w, d.first_page, d.n_pages, is_zero, crc);
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

int main(int argc, char **argv)
{
	struct worker w = { 0 };
	stage_set_name("worker", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, "pageferry-worker --index=I [--zstd-level=LEVEL]");
	uint64_t index64 = stage_arg_u64("index", 0, SHM_MAX_WORKERS - 1);
	int level = (int)stage_arg_u64_or("zstd-level", 1, 19, 0);
	stage_args_done();
	stage_close_inherited_fds(level ? WORKER_FD_ARENA : WORKER_FD_BACK, NULL, 0);
	stage_attach_segment(&w.seg);
	if (index64 >= w.seg.geo.n_workers)
		stage_die(STAGE_EXIT_USAGE, "--index=%llu, but the segment has %u workers",
			  (unsigned long long)index64, w.seg.geo.n_workers);
	uint32_t index = (uint32_t)index64;
	stage_set_name("worker", (int)index);
	w.geo = (struct proto_geometry){ .page_size = w.seg.geo.page_size,
					 .max_run_pages = w.seg.geo.max_run_pages,
					 .guest_pages = w.seg.geo.guest_pages };
	w.guest = stage_map_guest(&w.seg, 0);
	w.stats = shm_segment_stats(&w.seg, SHM_STATS_WORKER0 + index);
	w.fingerprints = shm_segment_fingerprints(&w.seg);
	w.fp_chunk_pages = w.seg.fp_chunk_pages;
	proto_crc32c_shift_init(&w.page_shift, w.geo.page_size);
	stage_ring(&w.seg, SHM_RING_SCAN_TO_WORKER, index, WORKER_FD_IN, &w.in);
	stage_ring(&w.seg, SHM_RING_WORKER_TO_WRITER, index, WORKER_FD_OUT, &w.out);
	stage_ring(&w.seg, SHM_RING_WRITER_TO_WORKER, index, WORKER_FD_BACK, &w.back);
	int max_fd = WORKER_FD_BACK;
	if (level) {
		w.buffer_size = (uint64_t)w.geo.max_run_pages * w.geo.page_size;
		w.arena = stage_map_arena(WORKER_FD_ARENA, wk_arena_size(w.buffer_size), 1);
		w.zstd = wk_zstd_new(level, w.buffer_size);
		if (!w.zstd)
			stage_die(STAGE_EXIT_FAILED, "setting up zstd level %d", level);
		for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++) {
			w.free_buffers[w.n_free++] = b;
			w.is_free[b] = 1;
		}
		max_fd = WORKER_FD_ARENA;
	}
	stage_lockdown(SB_ROLE_WORKER, max_fd, 0);
	stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	struct shm_slot batch[BURST];
	for (;;) {
		int n = shm_ring_dequeue(&w.in, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from scanner");
		if (n == 0) {
			flush(&w); /* the writer should not wait on us while we sleep */
			int rc = shm_ring_wait_ready(&w.in, 1, -1);
			if (rc < 0)
				stage_die_ring(rc, "ring from scanner");
			continue;
		}
		for (int i = 0; i < n; i++) {
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
				flush(&w);
			} else if (d.type == PROTO_DESC_END) {
				struct proto_desc end = { .type = PROTO_DESC_END };
				push(&w, &end);
				flush(&w);
				recheck_when_asked(&w);
				/* Our XORs reached the writer with RECHECKED (ring
				 * release); DONE only tells it the re-check was had. */
				stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_DONE);
				return STAGE_EXIT_OK;
			} else {
				stage_die(STAGE_EXIT_FAILED, "descriptor from scanner: unexpected type %u", d.type);
			}
		}
	}
}
