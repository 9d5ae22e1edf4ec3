/* pageferry-inflater: a helper of the receive stage.  Decompresses the zstd
 * frames the receive stage put in its arena and writes their pages into the
 * destination file (dest/ds_place.h), after checking each descriptor against the session's geometry
 * and each frame's output against its page count.
 *
 * argv: pageferry-inflater --index=I
 * fds (stage/stage_fds.h): 3 control segment, 4 destination RAM file
 *      (read-write), 5 wake socket of the ring from the receive stage (we
 *      consume), 6 its arena (read-only).
 *
 * The session.  The receive stage learns the guest's geometry from the
 * sender's handshake, after this process was started; it publishes it in
 * the segment's destination line (shm/shm_layout.h) and wakes us.  We
 * check it, open the destination for writing, and lock down.
 *
 * A ZSTD frame holds every page of a run, a ZSTD_SPARSE frame only the
 * pages its bitmap (before it in the buffer) names; the receive stage has
 * placed the zero pages of those already (the sender's workers never put a
 * zero page in a frame).  A frame is decompressed into a private scratch
 * buffer and each stretch of its pages written in one pwrite.
 *
 * Replacement.  A slot is released only once its pages are placed, and the
 * receive stage reuses a frame's buffer only once its slot is released.
 * So when the front end replaces an inflater that died (same index, same
 * fds; PAGEFERRY_RESTARTED set), the replacement finds in the ring exactly
 * the frames whose pages may not all be placed, and places them again: the
 * same frame gives the same pages, and nothing newer can exist for them
 * yet (a page comes once per round, and the next round starts only when
 * this ring is empty).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dest/ds_place.h"
#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "stage/stage.h"
#include "workers/wk_arena.h"
#include "workers/wk_zstd.h"

#define BURST 16u
#define RING_NAME "ring from pageferry-receive"

/* Sleep until the receive stage has published the session (A3), then
 * read and check it. */
static struct proto_geometry await_session(struct shm_seg_header *h, struct shm_ring *in)
{
	/* A3 pairs with R3 in ds_inflaters_publish. */
	while (!atomic_load_explicit(&h->dest_ready, memory_order_acquire)) {
		struct pollfd p = { .fd = in->wake_fd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			stage_die_errno(-errno, "waiting for the session");
		}
		int rc = shm_ring_drain_wakes(in);
		if (rc == 0 && (p.revents & (POLLHUP | POLLERR)))
			rc = -EPIPE;
		if (rc < 0)
			stage_die_ring(rc, RING_NAME);
	}
	struct proto_geometry g = { .page_size = h->dest_page_size, .max_run_pages = h->dest_max_run_pages,
				    .guest_pages = h->dest_guest_pages };
	if (!proto_page_size_valid(g.page_size) || !proto_run_limit_valid(g.page_size, g.max_run_pages) ||
	    !proto_guest_pages_valid(g.page_size, g.guest_pages))
		stage_die(STAGE_EXIT_FAILED, "geometry from pageferry-receive: %s", proto_strerror(PROTO_E_GEOMETRY));
	return g;
}

static struct shm_stats *stats;

static noreturn void place_failed(const struct ds_place *pl, int rc, uint64_t first, uint64_t n)
{
	char line[512];
	ds_place_failure(pl, rc, first, n, line, sizeof(line));
	if (ds_place_is_full(pl, rc))
		stage_stat_set(stats, SHM_STAT_FLAGS, SHM_FLAG_DEST_FULL); /* before we hang up */
	stage_die(STAGE_EXIT_FAILED, "%s", line);
}

static void place(const struct ds_place *pl, uint32_t page, const uint8_t *src, uint64_t first, uint32_t n)
{
	int rc = ds_place_write(pl, src, (uint64_t)n * page, first * page);
	if (rc < 0)
		place_failed(pl, rc, first, n);
}

/* Decode one RUN's buffer: its frame, and for ZSTD_SPARSE the bitmap before
 * it (written by the receive stage, checked again here: it names what we
 * write), then place the decompressed pages.  Returns the frame's raw size. */
static size_t inflate_run(const struct ds_place *pl, const struct proto_geometry *geo, struct wk_zstd *z,
			  uint8_t *scratch, const struct proto_desc *d, const uint8_t *buffer)
{
	static uint8_t bitmap[PROTO_SPARSE_BITMAP_MAX];
	uint32_t present = d->n_pages, prefix = 0;
	enum proto_err err = PROTO_OK;
	if (d->encoding == PROTO_ENC_ZSTD_SPARSE) {
		prefix = proto_sparse_bitmap_bytes(d->n_pages);
		memcpy(bitmap, buffer, prefix);
		err = proto_sparse_bitmap_some(bitmap, d->n_pages, &present);
		if (err == PROTO_OK && prefix + (uint64_t)d->payload_len > WK_ARENA_DEST_BUFFER_SIZE)
			err = PROTO_E_PAYLOAD_LEN;
	}
	size_t out_len = (size_t)present * geo->page_size;
	if (err == PROTO_OK)
		err = wk_zstd_decompress(z, scratch, out_len, buffer + prefix, d->payload_len);
	if (err != PROTO_OK)
		stage_die(STAGE_EXIT_FAILED, "packet for pages %llu..%llu: %s", (unsigned long long)d->first_page,
			  (unsigned long long)(d->first_page + d->n_pages - 1), proto_strerror(err));
	if (!prefix) {
		place(pl, geo->page_size, scratch, d->first_page, d->n_pages);
		return out_len;
	}
	uint32_t k = 0, start, len;
	const uint8_t *src = scratch;
	while (proto_sparse_next_extent(bitmap, d->n_pages, &k, &start, &len)) {
		place(pl, geo->page_size, src, d->first_page + start, len);
		src += (size_t)len * geo->page_size;
	}
	return out_len;
}

int main(int argc, char **argv)
{
	stage_set_name("inflater", -1);
	stage_tie_to_supervisor();
	stage_args(argc, argv, "pageferry-inflater --index=I");
	uint64_t index64 = stage_arg_u64("index", 0, SHM_MAX_WORKERS - 1);
	stage_args_done();
	stage_close_inherited_fds(INFLATER_FD_ARENA, NULL, 0);
	struct shm_segment seg;
	stage_attach_segment(&seg);
	if (index64 >= seg.geo.n_workers)
		stage_die(STAGE_EXIT_USAGE, "--index=%llu, but the segment has %u inflaters",
			  (unsigned long long)index64, seg.geo.n_workers);
	uint32_t index = (uint32_t)index64;
	stage_set_name("inflater", (int)index);
	struct shm_ring in;
	stage_ring(&seg, SHM_RING_RECEIVER_TO_INFLATER, index, INFLATER_FD_IN, &in);
	stats = shm_segment_stats(&seg, SHM_STATS_WORKER0 + index);
	bool replacement = getenv("PAGEFERRY_RESTARTED") != NULL;
	if (replacement && atomic_load_explicit(&stats->v[SHM_STAT_STATE], memory_order_relaxed) == SHM_PROC_DONE)
		return STAGE_EXIT_OK; /* the one before us took its END and was killed on its way out */
	const uint8_t *arena = stage_map_arena(INFLATER_FD_ARENA, wk_arena_size(WK_ARENA_DEST_BUFFER_SIZE), 0);
	struct proto_geometry geo = await_session(seg.hdr, &in);
	struct ds_place place;
	ds_place_open(&place, STAGE_FD_GUEST, geo.guest_pages * geo.page_size);
	struct wk_zstd *z = wk_zstd_new(0, (size_t)geo.max_run_pages * geo.page_size);
	uint8_t *scratch = aligned_alloc(4096, (size_t)geo.max_run_pages * geo.page_size);
	if (!z || !scratch)
		stage_die(STAGE_EXIT_FAILED, "setting up zstd");
	/* Not touched ahead: a page fault is no system call, so the sandbox
	 * does not mind, and a transfer without zstd never uses it (new memory
	 * costs ~3 ms per MiB to back on this VM, doc/benchmarks.md "Restore
	 * buffers not touched ahead"). */
	stage_lockdown(SB_ROLE_INFLATER, INFLATER_FD_ARENA, 1); /* it writes the destination */
	stage_stat_set(stats, SHM_STAT_STATE, SHM_PROC_LOCKED_DOWN);
	/* The receive stage may sleep for a release the one before us made
	 * just before it died, without waking it: one byte, whatever its flag. */
	if (replacement)
		__shm_ring_wake_peer(&in);

	struct shm_slot batch[BURST];
	for (;;) {
		int n = shm_ring_peek(&in, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			stage_die_ring(n, RING_NAME);
		if (n == 0) {
			int rc = shm_ring_wait_ready(&in, 1, -1);
			if (rc < 0)
				stage_die_ring(rc, RING_NAME);
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct proto_desc d;
			enum proto_err err = proto_desc_unpack(batch[i], &geo, WK_ARENA_BUFFERS, &d);
			if (err == PROTO_OK && d.type == PROTO_DESC_END) {
				/* Said before the slot goes: a replacement of ours that
				 * finds it can leave at once. */
				stage_stat_set(stats, SHM_STAT_STATE, SHM_PROC_DONE);
				shm_ring_release(&in, 1);
				return STAGE_EXIT_OK;
			}
			if (err == PROTO_OK && (d.type != PROTO_DESC_RUN || !proto_encoding_is_zstd(d.encoding)))
				err = PROTO_E_DESC_TYPE;
			if (err != PROTO_OK)
				stage_die(STAGE_EXIT_FAILED, "descriptor from pageferry-receive: %s", proto_strerror(err));
			stage_test_hook("inflater");
			size_t out_len = inflate_run(&place, &geo, z, scratch, &d,
						     arena + (uint64_t)d.buffer * WK_ARENA_DEST_BUFFER_SIZE);
			stage_stat_add(stats, SHM_STAT_PAGES, d.n_pages);
			stage_stat_add(stats, SHM_STAT_IN_BYTES, d.payload_len);
			stage_stat_add(stats, SHM_STAT_OUT_BYTES, out_len);
			/* R1 (in shm_ring_release): the pages are placed and the
			 * buffer read; the receive stage may reuse it now. */
			shm_ring_release(&in, 1);
		}
	}
}
