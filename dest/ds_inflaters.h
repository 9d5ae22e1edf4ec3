/* The receive stage's side of its inflaters: one ring to each
 * (SHM_RING_RECEIVER_TO_INFLATER) and its arena of WK_ARENA_BUFFERS buffers,
 * into which a channel thread receives a zstd frame before it posts the
 * frame's RUN descriptor.
 *
 * There is no ring back.  An inflater releases a slot only once the pages
 * of its frame are placed (shm_ring_peek, then shm_ring_release), so the
 * ring's head is the one record of what is done: a buffer whose RUN was
 * posted at ring index t is free again once head has passed t, and an
 * inflater has placed everything once its ring is empty.  An inflater
 * that dies is replaced by the front end with the same ring and arena; the
 * replacement resumes at head, redoing at most the frames it finds
 * unreleased (placing a frame twice gives the same pages), and nothing
 * here changes: no entry is replaced, so none needs protecting
 * (doc/architecture.md, "Replacing an inflater").
 *
 * The session (geometry, round) reaches the inflaters through the
 * segment's destination line (shm/shm_layout.h), written here only.
 *
 * Threads: every call but ds_inflaters_attach takes `lock` itself except
 * where said; the rings have one producer at a time.
 */
#ifndef PF_DS_INFLATERS_H
#define PF_DS_INFLATERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dest/ds_live.h"
#include "protocol/proto_geometry.h"
#include "shm/shm_ring.h"
#include "shm/shm_segment.h"
#include "workers/wk_arena.h"

struct ds_inflater {
	struct shm_ring ring;	/* we produce, the inflater consumes */
	const struct shm_stats *stats; /* the inflater's own block (read only) */
	uint8_t *arena;		/* WK_ARENA_BUFFERS of WK_ARENA_DEST_BUFFER_SIZE, read-write */
	uint8_t state[WK_ARENA_BUFFERS];	 /* enum in ds_inflaters.c */
	uint32_t posted_at[WK_ARENA_BUFFERS]; /* ring index of the RUN naming it */
};

struct ds_inflaters {
	pthread_mutex_t lock;	/* one producer at a time on every ring */
	uint32_t n, next;	/* inflaters; where the next search starts */
	struct shm_seg_header *hdr;	/* its destination line is ours to write */
	struct shm_stats *stats;	/* the receive stage's: RUNS counts rerouted frames */
	struct ds_live live;	/* which ones get new frames (dest/ds_live.h) */
	struct ds_inflater inf[SHM_MAX_WORKERS];
};

/* Bind every inflater's ring and map its arena (before lock-down), or die.
 * stats: the receive stage's block, where SHM_STAT_RUNS counts the frames
 * given to another inflater than the next in turn because that one was out
 * of the live table (dead, its replacement not running yet). */
void ds_inflaters_attach(struct ds_inflaters *t, const struct shm_segment *seg, struct shm_stats *stats);
/* Publish the session's geometry (round 1) to the inflaters and wake them:
 * they wait for it before they map the destination and lock down. */
void ds_inflaters_publish(struct ds_inflaters *t, const struct proto_geometry *geo);
/* A free buffer of some live inflater (of any, if none is live), marked
 * taken: *i, *b name it.  Sleeps while every buffer of every live inflater
 * is in use.  A channel thread only (registered with ds_live_thread_start). */
uint8_t *ds_inflaters_take(struct ds_inflaters *t, uint32_t *i, uint32_t *b);
/* Post the RUN that places the frame now in buffer b of inflater i:
 * ZSTD, the frame at the buffer's start, or ZSTD_SPARSE, the page bitmap
 * there and the frame after it (proto_sparse_bitmap_bytes(n_pages)). */
void ds_inflaters_post(struct ds_inflaters *t, uint32_t i, uint32_t b, uint8_t encoding, uint64_t first_page,
		       uint32_t n_pages, uint32_t frame_len);
/* The end of a round: wait until every inflater has placed everything it
 * was given, so that nothing of an older round lands after the next one's
 * pages.  Only while no other thread posts (the receive stage's round
 * barrier). */
void ds_inflaters_end_round(struct ds_inflaters *t);
/* Did an inflater fail because the destination's filesystem is full
 * (SHM_FLAG_DEST_FULL)?  Any thread, no lock: the receive stage's last word
 * asks it after an inflater hung up. */
bool ds_inflaters_found_dest_full(const struct ds_inflaters *t);
/* The end: post END to every inflater and wait until each has placed all
 * and taken it (it exits then).  No other thread posts any more. */
void ds_inflaters_finish(struct ds_inflaters *t);

#endif
