/* The table of live inflaters: the ones the receive stage's channel threads
 * give new zstd frames to.  An inflater that died is out of it until the
 * front end says its replacement runs (dest/ds_commit.h, the notices), so
 * that the frames received meanwhile go to the others instead of filling
 * its buffers and then waiting for it.  What is already in its ring stays
 * there for its replacement.
 *
 * Protected with liburcu's urcu-qsbr (doc/architecture.md, "Where liburcu
 * is used, and where not"): the channel threads read the table on every
 * frame; the main thread alone replaces it, on a notice.  The two tables
 * are static and used in turn, so an update allocates nothing after
 * lock-down: the one being filled is the one no reader can still see
 * (the grace period of the update before made sure of that).
 *
 * A channel thread is registered (ds_live_thread_start) before lock-down and
 * stays offline except inside ds_live_read, so it never holds up a grace
 * period while it waits for the network, an inflater or a barrier. */
#ifndef PF_DS_LIVE_H
#define PF_DS_LIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/shm_layout.h"

struct ds_live_table {
	uint32_t n;			/* how many are live */
	uint32_t index[SHM_MAX_WORKERS];	/* which, ascending */
};

struct ds_live {
	struct ds_live_table *current;	/* RCU-protected */
	struct ds_live_table tables[2];	/* current is one of them */
	uint32_t n_inflaters;
	bool live[SHM_MAX_WORKERS];	/* the main thread's copy: what current says */
};

/* Every inflater live (before the channel threads start). */
void ds_live_init(struct ds_live *l, uint32_t n_inflaters);
/* A channel thread: register with RCU (and leave it offline), and at its end
 * unregister.  Before lock-down: registering may allocate its TLS. */
void ds_live_thread_start(void);
void ds_live_thread_end(void);
/* The main thread, before lock-down: a first grace period, so that nothing
 * liburcu sets up lazily is left for after it. */
void ds_live_warm_up(struct ds_live *l);
/* A channel thread: mark in live[] the live inflaters (none if every one is
 * dead); their number. */
uint32_t ds_live_read(struct ds_live *l, bool live[SHM_MAX_WORKERS]);
/* The main thread only: inflater i (< n_inflaters) died (false) or its
 * replacement runs (true).  Publishes the new table and waits for a grace
 * period before the old one may be reused. */
void ds_live_set(struct ds_live *l, uint32_t i, bool live);

#endif
