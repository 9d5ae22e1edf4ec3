/* Where the writer's runs go: a snapshot file (wr_sink_file.c) or a
 * migration's network channels (wr_sink_net.c).  The writer takes one
 * descriptor per run from the workers, already in the form it goes out in,
 * and hands it to its sink; the sink knows its own failures and dies with
 * its own message.
 *
 * Both sinks finish in two phases (doc/architecture.md, "The handoff"):
 * prepare makes everything durable where it goes without declaring it
 * complete; the writer then has the workers re-check that the guest did not
 * change; commit declares it complete, or calls it off. */
#ifndef PF_WR_SINK_H
#define PF_WR_SINK_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "protocol/proto_desc.h"
#include "protocol/proto_packet.h"
#include "shm/shm_ring.h"
#include "shm/shm_segment.h"
#include "workers/wk_record.h"

/* What both sinks see of the writer. */
struct wr_source {
	struct shm_segment seg;
	struct proto_geometry geo;
	struct shm_stats *stats;
	uint32_t n_workers;
	struct shm_ring in[SHM_MAX_WORKERS], back[SHM_MAX_WORKERS];
	const uint8_t *arena[SHM_MAX_WORKERS];
	uint64_t frame_size;	/* a zstd frame's room in an arena buffer */
	uint32_t round;		/* pre-copy round in progress (1 without rounds) */
	uint16_t held[SHM_MAX_WORKERS]; /* arena buffers the sink has not given back */
	bool rechecked;		/* the final re-check ran (and passed, or we died) */
};

/* One run as a worker described it: the descriptor, and for RAW, SPARSE
 * and ZSTD its checked record.  The sink gives the buffer back with
 * wr_source_give_back once nothing refers to it any more. */
struct wr_run {
	uint32_t worker;
	struct proto_desc d;
	struct wk_record rec;
};

struct wr_sink {
	void (*put)(struct wr_sink *s, const struct wr_run *r);
	/* Every worker reached the round's fence (migration with rounds). */
	void (*round_end)(struct wr_sink *s);
	/* About to sleep: send or submit what is gathered; add fds whose
	 * readiness should wake us (completions) to pfd, return how many. */
	unsigned (*idle)(struct wr_sink *s, struct pollfd *pfd, unsigned max);
	/* Between busy passes: reap completions without waiting. */
	void (*progress)(struct wr_sink *s);
	/* Every worker ended: make it durable, not yet complete. */
	void (*prepare)(struct wr_sink *s);
	/* Declare it complete, or (changed: the re-check found pages
	 * [first, last] changed) call it off and fail. */
	void (*commit)(struct wr_sink *s, bool changed, uint64_t first, uint64_t last);
	/* Is the user cancelling?  Checked between passes. */
	void (*check_cancel)(struct wr_sink *s);
	struct wr_source *src;
};

/* A RAW or SPARSE run's data extents in page order: the next one's first
 * page within the run and length, with *k the cursor (0 to begin).  RAW has
 * one, the whole run; the record has as many extent CRCs (wk_record_read). */
static inline bool wr_run_next_extent(const struct wr_run *r, uint32_t *k, uint32_t *start, uint32_t *len)
{
	if (r->d.encoding == PROTO_ENC_SPARSE)
		return proto_sparse_next_extent(r->rec.bitmap, r->d.n_pages, k, start, len);
	if (*k)
		return false;
	*start = 0;
	*k = *len = r->d.n_pages;
	return true;
}

/* Give worker i's arena buffer back (the sink is done with it). */
void wr_source_give_back(void *src, uint32_t worker, uint32_t buffer);
/* After a sink's failure: take every descriptor still coming, applying
 * what it says (fingerprints) and giving its buffer back, so that the
 * workers can end and re-check (writer/wr_recheck.h). */
void wr_source_drop(void *src, uint32_t worker, const struct proto_desc *d);
/* A paused migration's send failed: take what the workers still send
 * (including what the writer took from their rings and did not handle),
 * give every buffer back, and re-check the guest (wr_recheck_after_failure):
 * fails the stage if the guest changed, returns otherwise. */
void wr_source_after_failure(struct wr_source *src);

/* device_state (snapshot --qmp): the VMM's device state is read from
 * WRITER_FD_STATE and stored once the pages are written. */
void wr_sink_file_init(struct wr_sink *s, struct wr_source *src, int *max_fd, bool device_state);
/* The migrate mode's named arguments (stage/stage.h), before anything is
 * opened; returns whether a pre-shared key comes on WRITER_FD_PSK. */
bool wr_sink_net_args(void);
/* Connects and handshakes every channel, before lock-down; *max_fd grows
 * to cover the sockets.  Also knows (--rounds) whether rounds come.
 * device_state (migrate --qmp): then asks the front end for the VMM's
 * device state on WRITER_FD_COMMIT and sends it on the main channel. */
void wr_sink_net_init(struct wr_sink *s, struct wr_source *src, int *max_fd, bool device_state);
bool wr_sink_net_rounds(void);

#endif
