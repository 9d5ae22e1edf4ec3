/* Restoring a snapshot file into a destination RAM file. */
#ifndef PF_RC_RESTORE_H
#define PF_RC_RESTORE_H

#include <stdint.h>

#include "dio/dio_queue.h"
#include "protocol/proto_snapfile.h"
#include "shm/shm_layout.h"

struct rc_restore {
	int meta_fd, data_fd, dest_fd;
	int direct;
	struct proto_snap_header hdr;
	uint8_t *bitmap;
	uint8_t *dest;		/* destination mapping, read-write */
	struct shm_stats *stats;
	_Atomic uint64_t next_chunk;
	_Atomic int failed_errno;
};

/* Reads in flight per reader thread. */
#define RC_RESTORE_DEPTH 64u

struct rc_reader {
	struct rc_restore *restore;
	struct dio_queue queue;
	uint64_t bytes_done;	/* completed, not yet added to the statistics */
};

/* Read and check header and bitmap.  On a bad file returns -EBADMSG with
 * *why set to the protocol error's message; -errno otherwise with *why
 * naming the step. */
int rc_restore_open(struct rc_restore *r, int meta_fd, int data_fd, int dest_fd, const char **why);
/* Size and map the destination (holes everywhere). */
int rc_restore_map_dest(struct rc_restore *r, const char **why);
/* Set up one reader's queue: before lock-down. */
int rc_reader_init(struct rc_reader *rd, struct rc_restore *r);
/* Body of each reader thread (arg: its struct rc_reader): claims chunks of
 * the page space and reads the runs of present pages in them straight into
 * the destination mapping, RC_RESTORE_DEPTH reads in flight. */
void *rc_restore_reader(void *arg);

#endif
