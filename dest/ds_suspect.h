/* Payload checksum mismatches in a live migration (doc/architecture.md,
 * "Payload checksums").
 *
 * In a live migration a RAW or SPARSE packet may fail its checksum without
 * any corruption: the guest wrote one of its pages after the worker took the
 * checksum and before TCP read the page (sendfile and MSG_ZEROCOPY send from
 * the running guest).  That page is in the dirty log, so it comes again in a
 * later round.  The checksum covers the whole packet, not each page, so the
 * receiver cannot tell which page changed; it keeps
 *  - a bit per guest page: the page's latest copy came in a packet whose
 *    checksum did not match (set by such a packet, cleared by any later
 *    packet covering the page that does match, or a ZERO packet);
 *  - the list of mismatching packets, in arrival order (rounds are fenced);
 *  - once any packet mismatched, the round of each page's latest copy.
 * After every END, a mismatching packet is explained when one of its pages
 * was sent again in a later round, intact or not: the guest changed it (its
 * later copy may itself have changed in flight, and be explained in turn).
 * A page whose latest copy came in a packet that is not explained fails the
 * transfer, naming the packet.
 */
#ifndef PF_DS_SUSPECT_H
#define PF_DS_SUSPECT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ds_mismatch {
	uint32_t channel, round, n_pages;
	bool explained;
	uint64_t seq, first_page;
};

struct ds_suspect {
	_Atomic uint64_t *bits;	/* NULL: not a live migration */
	uint64_t n_pages;
	_Atomic uint64_t n_set;
	uint8_t *last_round;	/* per page; rounds are at most 65 */
	pthread_mutex_t lock;	/* the list */
	struct ds_mismatch *log;
	uint64_t n_log, max_log;
	bool overflow;		/* more mismatching packets than the list holds */
};

/* Before lock-down (the memory is only touched where mismatches happen).
 * 0 or -errno. */
int ds_suspect_init(struct ds_suspect *s, uint64_t n_pages);
/* A packet's checksum did not match: its pages' latest copies are suspect. */
void ds_suspect_mark(struct ds_suspect *s, const struct ds_mismatch *m);
/* A packet of `round` covering [first, first + n) arrived intact. */
void ds_suspect_clear(struct ds_suspect *s, uint64_t first, uint32_t n, uint32_t round);
/* After every END, from one thread.  false when every mismatch is
 * explained; otherwise true with the first unexplained packet in *m
 * (m->n_pages 0 when the list overflowed and it is not known) and the first
 * range of its pages still suspect in [*first, *last]. */
bool ds_suspect_unexplained(struct ds_suspect *s, struct ds_mismatch *m, uint64_t *first, uint64_t *last);

#endif
