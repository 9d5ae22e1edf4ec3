#include "dest/ds_inflaters.h"

#include <stdatomic.h>
#include <time.h>

#include "protocol/proto_desc.h"
#include "stage/stage.h"

enum buffer_state {
	BUF_FREE = 0,
	BUF_FILLING,	/* taken by a channel thread, receiving a frame */
	BUF_POSTED,	/* named by the RUN at posted_at[b]: the inflater's until head passes it */
};

void ds_inflaters_attach(struct ds_inflaters *t, const struct shm_segment *seg, struct shm_stats *stats)
{
	int rc = pthread_mutex_init(&t->lock, NULL);
	if (rc != 0)
		stage_die_errno(-rc, "setting up the inflater rings");
	t->n = seg->geo.n_workers;
	t->hdr = seg->hdr;
	t->stats = stats;
	ds_live_init(&t->live, t->n);
	for (uint32_t i = 0; i < t->n; i++) {
		struct ds_inflater *f = &t->inf[i];
		stage_ring(seg, SHM_RING_RECEIVER_TO_INFLATER, i, RECEIVE_FD_RING(i), &f->ring);
		f->stats = shm_segment_stats(seg, SHM_STATS_WORKER0 + i);
		f->arena = stage_map_arena(RECEIVE_FD_ARENA(i, t->n), wk_arena_size(WK_ARENA_DEST_BUFFER_SIZE), 1);
	}
}

void ds_inflaters_publish(struct ds_inflaters *t, const struct proto_geometry *geo)
{
	struct shm_seg_header *h = t->hdr;
	h->dest_page_size = geo->page_size;
	h->dest_guest_pages = geo->guest_pages;
	h->dest_max_run_pages = geo->max_run_pages;
	/* R3 pairs with A3 in the inflater (await_session): the fields above
	 * are written before dest_ready says so. */
	atomic_store_explicit(&h->dest_ready, 1, memory_order_release);
	/* They sleep on their wake sockets until then; one byte each, whatever
	 * the ring's flags say (nothing is in the rings yet). */
	for (uint32_t i = 0; i < t->n; i++)
		__shm_ring_wake_peer(&t->inf[i].ring);
}

/* The ring index up to which inflater i released its slots. */
static uint32_t released(struct ds_inflaters *t, uint32_t i)
{
	struct ds_inflater *f = &t->inf[i];
	/* A1 (in shm_ring_free_count): what the inflater did before it
	 * released a slot, placing the pages and reading the buffer, is done. */
	int64_t free_slots = shm_ring_free_count(&f->ring);
	if (free_slots < 0)
		stage_die_ring((int)free_slots, "ring to an inflater");
	uint32_t tail = atomic_load_explicit(&f->ring.ctrl->tail, memory_order_relaxed);
	return tail - (f->ring.size - (uint32_t)free_slots);
}

/* Free every buffer whose RUN the inflater released; one that is free. */
static int reclaim(struct ds_inflaters *t, uint32_t i)
{
	struct ds_inflater *f = &t->inf[i];
	uint32_t head = released(t, i);
	int found = -1;
	for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++) {
		if (f->state[b] == BUF_POSTED && (int32_t)(f->posted_at[b] - head) < 0)
			f->state[b] = BUF_FREE;
		if (f->state[b] == BUF_FREE && found < 0)
			found = (int)b;
	}
	return found;
}

/* How long a thread that needs a buffer sleeps on one ring before it reads
 * the live table again. */
#define TABLE_RECHECK_MS 20

/* Sleep until inflater i releases its oldest RUN or TABLE_RECHECK_MS pass;
 * false if none is posted. */
static bool wait_oldest(struct ds_inflaters *t, uint32_t i)
{
	struct ds_inflater *f = &t->inf[i];
	uint32_t tail = atomic_load_explicit(&f->ring.ctrl->tail, memory_order_relaxed);
	uint32_t oldest = 0;
	bool any = false;
	for (uint32_t b = 0; b < WK_ARENA_BUFFERS; b++)
		if (f->state[b] == BUF_POSTED && (!any || tail - f->posted_at[b] > tail - oldest)) {
			oldest = f->posted_at[b];
			any = true;
		}
	if (!any)
		return false;
	/* head > oldest  <=>  fewer than tail - oldest slots are used.  Not
	 * for ever: if inflater i died meanwhile, the caller must learn it
	 * (dest/ds_live.h) and turn to the others. */
	int rc = shm_ring_wait_free(&f->ring, f->ring.size - (tail - oldest) + 1, TABLE_RECHECK_MS);
	if (rc < 0)
		stage_die_ring(rc, "ring to an inflater");
	return true;
}

uint8_t *ds_inflaters_take(struct ds_inflaters *t, uint32_t *i, uint32_t *b)
{
	pthread_mutex_lock(&t->lock);
	for (;;) {
		/* Read again after every sleep: a replacement may have come. */
		bool live[SHM_MAX_WORKERS];
		if (ds_live_read(&t->live, live) == 0)
			for (uint32_t k = 0; k < t->n; k++)
				live[k] = true; /* all dead: wait on their rings for the replacements */
		for (uint32_t k = 0; k < t->n; k++) {
			uint32_t at = (t->next + k) % t->n;
			int found = live[at] ? reclaim(t, at) : -1;
			if (found >= 0) {
				struct ds_inflater *f = &t->inf[at];
				f->state[found] = BUF_FILLING;
				if (!live[t->next])
					stage_stat_add(t->stats, SHM_STAT_RUNS, 1);
				t->next = (at + 1) % t->n;
				pthread_mutex_unlock(&t->lock);
				*i = at;
				*b = (uint32_t)found;
				return f->arena + (uint64_t)found * WK_ARENA_DEST_BUFFER_SIZE;
			}
		}
		/* Every buffer of the live ones is in use.  Holding the lock while
		 * we sleep keeps us the rings' only producer (one sleeper per ring);
		 * the others wait for us.  A buffer posted to some inflater comes
		 * free when it has placed it; if every buffer is still being filled
		 * by another thread, that thread needs the lock to post it. */
		bool waited = false;
		for (uint32_t k = 0; k < t->n && !waited; k++) {
			uint32_t at = (t->next + k) % t->n;
			waited = live[at] && wait_oldest(t, at);
		}
		if (!waited) {
			pthread_mutex_unlock(&t->lock);
			nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
			pthread_mutex_lock(&t->lock);
		}
	}
}

void ds_inflaters_post(struct ds_inflaters *t, uint32_t i, uint32_t b, uint8_t encoding, uint64_t first_page,
		       uint32_t n_pages, uint32_t frame_len)
{
	struct proto_desc d = { .type = PROTO_DESC_RUN, .encoding = encoding, .buffer = (uint16_t)b,
				.n_pages = n_pages, .payload_len = frame_len, .first_page = first_page };
	struct shm_slot s = proto_desc_pack(&d);
	struct ds_inflater *f = &t->inf[i];
	pthread_mutex_lock(&t->lock);
	f->posted_at[b] = atomic_load_explicit(&f->ring.ctrl->tail, memory_order_relaxed);
	f->state[b] = BUF_POSTED;
	/* Never full: at most one RUN per buffer and one END are outstanding. */
	int rc = shm_ring_enqueue_all(&f->ring, &s, 1);
	pthread_mutex_unlock(&t->lock);
	if (rc < 0)
		stage_die_ring(rc, "ring to an inflater");
}

bool ds_inflaters_found_dest_full(const struct ds_inflaters *t)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (atomic_load_explicit(&t->inf[i].stats->v[SHM_STAT_FLAGS], memory_order_relaxed) &
		    SHM_FLAG_DEST_FULL)
			return true;
	return false;
}

/* Every inflater has released every slot: all its pages are placed. */
static void wait_all_placed(struct ds_inflaters *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		int rc = shm_ring_wait_free(&t->inf[i].ring, t->inf[i].ring.size, -1);
		if (rc < 0)
			stage_die_ring(rc, "ring to an inflater");
		reclaim(t, i);
	}
}

void ds_inflaters_end_round(struct ds_inflaters *t)
{
	pthread_mutex_lock(&t->lock);
	wait_all_placed(t);
	pthread_mutex_unlock(&t->lock);
}

void ds_inflaters_finish(struct ds_inflaters *t)
{
	struct proto_desc end = { .type = PROTO_DESC_END };
	struct shm_slot s = proto_desc_pack(&end);
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->n; i++) {
		int rc = shm_ring_enqueue_all(&t->inf[i].ring, &s, 1);
		if (rc < 0)
			stage_die_ring(rc, "ring to an inflater");
	}
	wait_all_placed(t);
	pthread_mutex_unlock(&t->lock);
}
