/* pageferry-inflater: a destination worker.  Decompresses the zstd payloads
 * the receiver put in its arena straight into the destination mapping, after
 * checking the descriptor against the geometry and the output size against
 * the page count.
 *
 * fds (stage/stage_fds.h): 3 control segment, 4 destination RAM file (read-write),
 *      5 wake socket of ring receiver -> this inflater (we consume)
 *      6 wake socket of ring this inflater -> receiver (buffers back)
 *      7 its arena (read-only)
 * argv: pageferry-inflater --index=I [--in-place]
 *
 * A frame covers a whole run, zero pages included: it is decompressed into a
 * private scratch buffer and only the pages that are not zero are copied to
 * the destination, so zero pages stay holes there.  In rounds after the
 * first (counted from the receiver's fences), and in every round when the
 * destination is an existing file (in-place), a zero page may replace older
 * contents and is written as zeros where it is not zero already.
 *
 * The first slot on the ring is the session geometry (w0 guest pages, w1
 * page size | max run pages << 32): the receiver learns it from the sender's
 * handshake.  It is checked here again, and only then do we map the
 * destination and lock down.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "workers/wk_arena.h"
#include "workers/wk_zero.h"
#include "workers/wk_zstd.h"

#define BURST 16u

static struct proto_geometry await_geometry(struct shm_ring *in)
{
	struct shm_slot s;
	for (;;) {
		int n = shm_ring_dequeue(in, &s, 1, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from receiver");
		if (n == 1)
			break;
		int rc = shm_ring_wait_ready(in, 1, -1);
		if (rc < 0)
			stage_die_ring(rc, "ring from receiver");
	}
	struct proto_geometry g = { .page_size = (uint32_t)s.w1, .max_run_pages = (uint32_t)(s.w1 >> 32),
				    .guest_pages = s.w0 };
	if (!proto_page_size_valid(g.page_size) || !proto_run_limit_valid(g.page_size, g.max_run_pages) ||
	    !proto_guest_pages_valid(g.page_size, g.guest_pages))
		stage_die(STAGE_EXIT_FAILED, "geometry from the receiver: %s", proto_strerror(PROTO_E_GEOMETRY));
	return g;
}

static void place(uint8_t *dst, const uint8_t *src, uint32_t n_pages, size_t page, bool may_hold_data,
		  struct shm_stats *stats)
{
	uint64_t zero = 0;
	for (uint32_t k = 0; k < n_pages; k++, dst += page, src += page) {
		if (!wk_page_is_zero(src, page))
			memcpy(dst, src, page);
		else if (zero++, may_hold_data && !wk_page_is_zero(dst, page))
			memset(dst, 0, page);
	}
	stage_stat_add(stats, SHM_STAT_ZERO_PAGES, zero);
}

int main(int argc, char **argv)
{
	stage_set_name("inflater", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, "pageferry-inflater --index=I [--in-place]");
	uint64_t index64 = stage_arg_u64("index", 0, SHM_MAX_WORKERS - 1);
	bool in_place = stage_arg_flag("in-place");
	stage_args_done();
	stage_close_inherited_fds(INFLATER_FD_ARENA, NULL, 0);
	struct shm_segment seg;
	stage_attach_segment(&seg);
	if (index64 >= seg.geo.n_workers)
		stage_die(STAGE_EXIT_USAGE, "--index=%llu, but the segment has %u inflaters",
			  (unsigned long long)index64, seg.geo.n_workers);
	uint32_t index = (uint32_t)index64;
	stage_set_name("inflater", (int)index);
	struct shm_ring in, back;
	stage_ring(&seg, SHM_RING_SCAN_TO_WORKER, index, INFLATER_FD_IN, &in);
	stage_ring(&seg, SHM_RING_WRITER_TO_WORKER, index, INFLATER_FD_BACK, &back);
	struct shm_stats *stats = shm_segment_stats(&seg, SHM_STATS_WORKER0 + index);
	struct proto_geometry geo = await_geometry(&in);
	uint8_t *dest = stage_map_file(STAGE_FD_GUEST, "destination", geo.guest_pages * geo.page_size, 1);
	const uint8_t *arena = stage_map_arena(INFLATER_FD_ARENA, wk_arena_size(WK_ARENA_DEST_BUFFER_SIZE), 0);
	struct wk_zstd *z = wk_zstd_new(0, (size_t)geo.max_run_pages * geo.page_size);
	uint8_t *scratch = malloc((size_t)geo.max_run_pages * geo.page_size);
	if (!z || !scratch)
		stage_die(STAGE_EXIT_FAILED, "setting up zstd");
	/* Touch it now: its pages must not be first faulted in after lock-down
	 * through an mmap the sandbox refuses (malloc may have used mmap). */
	memset(scratch, 0, (size_t)geo.max_run_pages * geo.page_size);
	uint32_t round = 1;
	stage_lockdown(SB_ROLE_WORKER, INFLATER_FD_ARENA, 0);
	stage_stat_set(stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);

	struct shm_slot batch[BURST];
	for (;;) {
		int n = shm_ring_dequeue(&in, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, "ring from receiver");
		if (n == 0) {
			int rc = shm_ring_wait_ready(&in, 1, -1);
			if (rc < 0)
				stage_die_ring(rc, "ring from receiver");
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct proto_desc d;
			enum proto_err err = proto_desc_unpack(batch[i], &geo, WK_ARENA_BUFFERS, &d);
			if (err == PROTO_OK && d.type == PROTO_DESC_FENCE) {
				/* The receiver's round barrier: everything before this is
				 * placed; say so. */
				round++;
				int rc = shm_ring_enqueue_all(&back, &batch[i], 1);
				if (rc < 0)
					stage_die_ring(rc, "ring to receiver");
				continue;
			}
			if (err == PROTO_OK && d.type == PROTO_DESC_END) {
				int rc = shm_ring_enqueue_all(&back, &batch[i], 1);
				if (rc < 0)
					stage_die_ring(rc, "ring to receiver");
				stage_stat_set(stats, SHM_STAT_STATE, SHM_PROC_DONE);
				return STAGE_EXIT_OK;
			}
			if (err == PROTO_OK && (d.type != PROTO_DESC_RUN || d.encoding != PROTO_ENC_ZSTD))
				err = PROTO_E_DESC_TYPE;
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "descriptor from receiver: %s", proto_strerror(err));
			size_t out_len = (size_t)d.n_pages * geo.page_size;
			err = wk_zstd_decompress(z, scratch, out_len, arena + (uint64_t)d.buffer * WK_ARENA_DEST_BUFFER_SIZE,
						 d.payload_len);
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "packet for pages %llu..%llu: %s",
					  (unsigned long long)d.first_page,
					  (unsigned long long)(d.first_page + d.n_pages - 1), proto_strerror(err));
			place(dest + d.first_page * geo.page_size, scratch, d.n_pages, geo.page_size, round > 1 || in_place,
			      stats);
			stage_stat_add(stats, SHM_STAT_PAGES, d.n_pages);
			stage_stat_add(stats, SHM_STAT_IN_BYTES, d.payload_len);
			stage_stat_add(stats, SHM_STAT_OUT_BYTES, out_len);
			struct proto_desc ret = { .type = PROTO_DESC_BUFFER, .buffer = d.buffer };
			struct shm_slot s = proto_desc_pack(&ret);
			int rc = shm_ring_enqueue_all(&back, &s, 1);
			if (rc < 0)
				stage_die_ring(rc, "ring to receiver");
		}
	}
}
