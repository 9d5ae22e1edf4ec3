/* The scanner's state, shared by its main file and the pre-copy loop. */
#ifndef PF_SC_SCANNER_H
#define PF_SC_SCANNER_H

#include <stdint.h>

#include "stage/stage.h"

struct scanner {
	struct shm_segment seg;
	struct shm_ring rings[SHM_MAX_WORKERS];
	struct shm_stats *stats;
	struct shm_stats *writer_stats;
	uint32_t n_workers;
	uint32_t next;
	uint32_t round;
	/* --max-bandwidth pacing */
	uint64_t max_bandwidth, posted_bytes, pacing_start_us;
};

uint64_t sc_now_us(void);
/* Post pages [first, end) in runs of at most max_run_pages. */
void sc_post_extent(struct scanner *s, uint64_t first, uint64_t end_page);
/* A fence for the current round on every worker ring. */
void sc_post_fence(struct scanner *s);

#endif
