/* Live migration's pre-copy control loop, run by the scanner: rounds over
 * the dirty log, measurement, convergence, throttling and switchover. */
#ifndef PF_SC_PRECOPY_H
#define PF_SC_PRECOPY_H

#include <stdint.h>

struct sc_precopy_params {
	uint64_t downtime_limit_us;
	uint64_t max_bandwidth;	/* bytes per second, 0: unlimited */
	int auto_converge;
	uint32_t max_rounds;	/* including the final, paused round */
	uint64_t pause_timeout_us;
	uint64_t *dirty_buf;	/* one bit per page, zeroed, made before lock-down */
};

struct scanner;

/* Round 1 has already been posted by the caller.  Runs the later rounds
 * and the final one; returns once the final round's fence went out.  Dies
 * with a message when the migration cannot converge or the VMM does not
 * pause. */
void sc_precopy_run(struct scanner *s, uint8_t *dirty_log, const struct sc_precopy_params *p);

#endif
