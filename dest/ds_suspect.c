#include "dest/ds_suspect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Mismatching packets remembered, per guest page: a live migration whose
 * every round-1 packet mismatched needs one per window (128 pages). */
#define LOG_PAGES_PER_ENTRY 8u

int ds_suspect_init(struct ds_suspect *s, uint64_t n_pages)
{
	s->n_pages = n_pages;
	s->max_log = n_pages / LOG_PAGES_PER_ENTRY + 256;
	int rc = pthread_mutex_init(&s->lock, NULL);
	if (rc)
		return -rc;
	/* calloc of this size maps fresh zero pages: nothing is touched (or
	 * counted against the process) until a mismatch writes there. */
	s->bits = calloc((n_pages + 63) / 64, sizeof(*s->bits));
	s->log = calloc(s->max_log, sizeof(*s->log));
	s->last_round = calloc(n_pages, 1);
	return s->bits && s->log && s->last_round ? 0 : -ENOMEM;
}

/* Set or clear bits [first, first + n), keeping n_set.  Channels place
 * disjoint pages within a round and rounds are separated by a barrier; the
 * atomics keep neighbouring pages of one word apart. */
static void update(struct ds_suspect *s, uint64_t first, uint64_t n, bool set)
{
	uint64_t end = first + n;
	for (uint64_t w = first / 64; w * 64 < end; w++) {
		uint64_t lo = first > w * 64 ? first - w * 64 : 0, hi = end - w * 64 < 64 ? end - w * 64 : 64;
		uint64_t mask = (hi == 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
		if (set) {
			uint64_t old = atomic_fetch_or_explicit(&s->bits[w], mask, memory_order_relaxed);
			atomic_fetch_add_explicit(&s->n_set, (uint64_t)__builtin_popcountll(mask & ~old),
						  memory_order_relaxed);
		} else {
			uint64_t old = atomic_fetch_and_explicit(&s->bits[w], ~mask, memory_order_relaxed);
			atomic_fetch_sub_explicit(&s->n_set, (uint64_t)__builtin_popcountll(mask & old),
						  memory_order_relaxed);
		}
	}
}

static bool bit(const struct ds_suspect *s, uint64_t page)
{
	return (atomic_load_explicit(&s->bits[page / 64], memory_order_relaxed) >> (page % 64)) & 1;
}

/* Channels place disjoint pages within a round, and rounds are separated by
 * a barrier: plain byte stores. */
static void seen_in(struct ds_suspect *s, uint64_t first, uint64_t n, uint32_t round)
{
	memset(s->last_round + first, (int)(round < 255 ? round : 255), n);
}

void ds_suspect_mark(struct ds_suspect *s, const struct ds_mismatch *m)
{
	update(s, m->first_page, m->n_pages, true);
	seen_in(s, m->first_page, m->n_pages, m->round);
	pthread_mutex_lock(&s->lock);
	if (s->n_log < s->max_log)
		s->log[s->n_log++] = *m;
	else
		s->overflow = true;
	pthread_mutex_unlock(&s->lock);
}

void ds_suspect_clear(struct ds_suspect *s, uint64_t first, uint32_t n, uint32_t round)
{
	/* Nearly always nothing is suspect: no work at all then.  (Rounds are
	 * only compared for pages of a logged mismatch, which set n_set.) */
	if (s->bits && atomic_load_explicit(&s->n_set, memory_order_relaxed)) {
		update(s, first, n, false);
		seen_in(s, first, n, round);
	}
}

/* The first suspect range inside [from, to). */
static bool first_range(const struct ds_suspect *s, uint64_t from, uint64_t to, uint64_t *first, uint64_t *last)
{
	uint64_t p = from;
	while (p < to && !bit(s, p))
		p++;
	if (p == to)
		return false;
	*first = *last = p;
	while (*last + 1 < to && bit(s, *last + 1))
		(*last)++;
	return true;
}

bool ds_suspect_unexplained(struct ds_suspect *s, struct ds_mismatch *m, uint64_t *first, uint64_t *last)
{
	if (!s->bits || atomic_load(&s->n_set) == 0)
		return false;
	/* Explained: some page of the packet came again in a later round. */
	for (uint64_t k = 0; k < s->n_log; k++) {
		struct ds_mismatch *e = &s->log[k];
		for (uint64_t p = e->first_page; p < e->first_page + e->n_pages && !e->explained; p++)
			e->explained = s->last_round[p] > e->round;
	}
	/* Latest first: a suspect page belongs to the latest packet that
	 * covered it; an explained one takes its pages off the list. */
	for (uint64_t k = s->n_log; k-- > 0;) {
		struct ds_mismatch *e = &s->log[k];
		if (e->explained) {
			update(s, e->first_page, e->n_pages, false);
		} else if (first_range(s, e->first_page, e->first_page + e->n_pages, first, last)) {
			*m = *e;
			return true;
		}
	}
	/* Left: pages of packets the list had no room for. */
	if (!first_range(s, 0, s->n_pages, first, last))
		return false;
	*m = (struct ds_mismatch){ 0 };
	return true;
}
