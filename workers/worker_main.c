/* pageferry-worker: zero-checks the pages of each run it is given and tells
 * the writer which sub-runs hold data and which are zero.
 *
 * fds: 3 control segment, 4 guest (read-only),
 *      5 wake socket of ring scanner -> this worker   (we consume)
 *      6 wake socket of ring this worker -> writer    (we produce)
 *      7 wake socket of ring writer -> this worker    (buffers coming back)
 * argv: pageferry-worker INDEX
 *
 * The input descriptors come from another process: each is decoded from a
 * private copy and checked against the geometry before the guest is touched.
 */
#include <errno.h>
#include <stdint.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "workers/wk_zero.h"

#define BURST 32u

struct worker {
	struct shm_segment seg;
	struct proto_geometry geo;
	const uint8_t *guest;
	struct shm_ring in, out, back;
	struct shm_stats *stats;
	struct shm_slot pending[BURST * 2];
	uint32_t n_pending;
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

static void emit(struct worker *w, uint8_t encoding, uint64_t first, uint32_t n)
{
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = encoding, .first_page = first,
				.n_pages = n,
				.payload_len = encoding == PROTO_ENC_RAW ? n * w->geo.page_size : 0 };
	push(w, &d);
}

/* Split a run into maximal sub-runs of data pages and of zero pages. */
static void check_run(struct worker *w, uint64_t first, uint32_t n)
{
	const size_t page = w->geo.page_size;
	uint64_t run_start = first;
	int run_zero = -1;
	uint64_t zero_pages = 0;
	for (uint64_t p = first; p < first + n; p++) {
		int zero = wk_page_is_zero(w->guest + p * page, page);
		zero_pages += (uint64_t)zero;
		if (zero != run_zero && run_zero >= 0) {
			emit(w, run_zero ? PROTO_ENC_ZERO : PROTO_ENC_RAW, run_start, (uint32_t)(p - run_start));
			run_start = p;
		}
		run_zero = zero;
	}
	emit(w, run_zero ? PROTO_ENC_ZERO : PROTO_ENC_RAW, run_start, (uint32_t)(first + n - run_start));
	stage_stat_add(w->stats, SHM_STAT_PAGES, n);
	stage_stat_add(w->stats, SHM_STAT_ZERO_PAGES, zero_pages);
	stage_stat_add(w->stats, SHM_STAT_RUNS, 1);
}

int main(int argc, char **argv)
{
	struct worker w = { 0 };
	stage_set_name("worker", -1);
	if (argc != 2)
		stage_die(STAGE_EXIT_USAGE, "usage: pageferry-worker INDEX");
	stage_attach_segment(&w.seg);
	uint32_t index = (uint32_t)stage_parse_u64("worker index", argv[1], 0, w.seg.geo.n_workers - 1);
	stage_set_name("worker", (int)index);
	w.geo = (struct proto_geometry){ .page_size = w.seg.geo.page_size,
					 .max_run_pages = w.seg.geo.max_run_pages,
					 .guest_pages = w.seg.geo.guest_pages };
	w.guest = stage_map_guest(&w.seg, 0);
	w.stats = shm_segment_stats(&w.seg, SHM_STATS_WORKER0 + index);
	stage_ring(&w.seg, SHM_RING_SCAN_TO_WORKER, index, STAGE_FD_ROLE, &w.in);
	stage_ring(&w.seg, SHM_RING_WORKER_TO_WRITER, index, STAGE_FD_ROLE + 1, &w.out);
	stage_ring(&w.seg, SHM_RING_WRITER_TO_WORKER, index, STAGE_FD_ROLE + 2, &w.back);
	stage_lockdown(SB_ROLE_WORKER, STAGE_FD_ROLE + 2, 0);
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
			} else if (d.type == PROTO_DESC_END) {
				struct proto_desc end = { .type = PROTO_DESC_END };
				push(&w, &end);
				flush(&w);
				stage_stat_set(w.stats, SHM_STAT_STATE, SHM_PROC_DONE);
				return STAGE_EXIT_OK;
			} else {
				stage_die(STAGE_EXIT_FAILED, "descriptor from scanner: unexpected type %u", d.type);
			}
		}
	}
}
