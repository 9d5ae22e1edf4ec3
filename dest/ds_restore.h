/* Restoring a snapshot file into a destination RAM file, or checking one
 * (`pageferry check`: the same reading and verification, no destination). */
#ifndef PF_DS_RESTORE_H
#define PF_DS_RESTORE_H

#include <pthread.h>
#include <stdint.h>

#include "dio/dio_queue.h"
#include "protocol/proto_snapfile.h"
#include "dest/ds_extents.h"
#include "shm/shm_layout.h"

/* Check mode: page data read per O_DIRECT read, per thread. */
#define DS_CHECK_BUF (1u << 20)

struct ds_restore {
	int meta_fd, data_fd, dest_fd;	/* dest_fd -1: check only */
	int direct;
	int in_place;		/* dest is an existing file of the guest's size (restore --qmp) */
	struct proto_snap_header hdr;
	uint8_t *bitmap;
	uint8_t *dest;		/* destination mapping, read-write; NULL: check only */
	struct shm_stats *stats;
	_Atomic uint64_t next_chunk;
	_Atomic int failed_errno;
	/* Verification: reader threads meet here once every page is read, then
	 * claim batches of extent records. */
	pthread_barrier_t all_read;
	_Atomic uint64_t next_batch;
	_Atomic uint64_t bad_extent;	/* lowest index + 1 of an extent that does not match */
};

/* Read the snapshot's device state into buf (hdr.device_state_len bytes,
 * allocated before lock-down) and check it against its CRC; with out_fd >=
 * 0, write it there.  A snapshot without one is refused when out_fd >= 0
 * ("no device state").  -errno / -EBADMSG with *why. */
int ds_restore_device_state(struct ds_restore *r, int out_fd, uint8_t *buf, const char **why);

/* Reads in flight per reader thread. */
#define DS_RESTORE_DEPTH 64u

struct ds_reader {
	struct ds_restore *restore;
	struct dio_queue queue;
	uint64_t bytes_done;	/* completed, not yet added to the statistics */
	uint8_t records[DS_EXTENT_BATCH * PROTO_SNAP_EXTENT_SIZE];
	uint8_t *buf;		/* check only: DS_CHECK_BUF bytes, O_DIRECT-aligned */
};

/* Read and check header, bitmap and extent table.  On a bad file returns
 * -EBADMSG with *why set to the protocol error's message; -errno otherwise
 * with *why naming the step.  dest_fd -1: check only. */
int ds_restore_open(struct ds_restore *r, int meta_fd, int data_fd, int dest_fd, const char **why);
/* Size and map the destination (holes everywhere). */
int ds_restore_map_dest(struct ds_restore *r, const char **why);
/* Set up one reader: before lock-down. */
int ds_reader_init(struct ds_reader *rd, struct ds_restore *r);
/* Body of each reader thread (arg: its struct ds_reader): claims chunks of
 * the page space and reads the runs of present pages in them straight into
 * the destination mapping, DS_RESTORE_DEPTH reads in flight; once every
 * thread has, claims batches of extents and checks their CRCs (check
 * only: reads each extent's pages and checks them, nothing else).
 * r->all_read must be a barrier for exactly the reader threads. */
void *ds_restore_reader(void *arg);
/* After the threads: 0, or -errno of a failed read (*why names it), or
 * -EBADMSG with the extent that does not match named in line (one line). */
int ds_restore_result(struct ds_restore *r, char *line, size_t len);

#endif
