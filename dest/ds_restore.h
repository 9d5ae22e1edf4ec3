/* Restoring a snapshot file into a destination RAM file, or checking one
 * (`pageferry check`: the same reading and verification, no destination). */
#ifndef PF_DS_RESTORE_H
#define PF_DS_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "dest/ds_extents.h"
#include "dest/ds_place.h"
#include "dio/dio_queue.h"
#include "protocol/proto_snapfile.h"
#include "shm/shm_layout.h"

struct ds_restore {
	int meta_fd, data_fd;
	int direct;
	bool in_place;		/* dest is an existing file of the guest's size (restore --in-place, --qmp) */
	bool dest_zeroed;	/* ... that reads as zeros (--zeroed): absent pages are left alone */
	struct proto_snap_header hdr;
	uint8_t *bitmap;
	struct ds_place *dest;	/* where pages go (dest/ds_place.h); NULL: check only */
	struct shm_stats *stats;
	_Atomic uint64_t next_chunk;	/* of the page space: the absent pages' pass */
	_Atomic uint64_t next_batch;	/* of extent records: the data pass */
	_Atomic int failed_errno;	/* the first failure of a read or write */
	_Atomic uint64_t failed_off;	/* a write's offset (UINT64_MAX: a read), for its message */
	_Atomic uint64_t failed_len;
	_Atomic uint64_t bad_extent;	/* lowest index + 1 of an extent that does not match */
};

/* Read the snapshot's device state into buf (hdr.device_state_len bytes,
 * allocated before lock-down) and check it against its CRC; with out_fd >=
 * 0, write it there.  A snapshot without one is refused when out_fd >= 0
 * ("no device state").  -errno / -EBADMSG with *why. */
int ds_restore_device_state(struct ds_restore *r, int out_fd, uint8_t *buf, const char **why);

/* Page data is read into a reader's own buffers: DS_RESTORE_DEPTH slots of
 * DS_RESTORE_PIECE bytes, 8 MiB a thread, up to DS_RESTORE_DEPTH reads in
 * flight.  A piece of an extent takes one slot, or up to
 * DS_RESTORE_LONG_SLOTS adjacent ones (1 MiB) when the extent is longer,
 * with at most DS_RESTORE_LONG_DEPTH such long pieces in flight per
 * reader.  The disk counts requests, and it wants both: a mixed guest's
 * extents are a page or three, and its restore took 1.6-1.7 s per GiB with
 * 8 reads of 1 MiB in flight, 1.2 s with 64 of 128 KiB; a random guest's
 * extents are 1 MiB, and 64 reads of 128 KiB took 1.07 of the time of 8 of
 * 1 MiB, which took 1.11 of 2 of 1 MiB (4 of 1 MiB: level with 2 then,
 * 0.81-0.97 of its time on 2026-12-04; doc/benchmarks.md, "Restore: long
 * reads for long extents" and "Restore buffers not touched ahead").  A destination
 * that is mapped (2 MiB pages: dest/ds_place.h) is read into straight away,
 * with no buffer to bound a read: there a piece is the part of an extent
 * inside one 2 MiB page of the destination, DS_RESTORE_MAPPED_PIECE, and a
 * slot only names it. */
#define DS_RESTORE_PIECE (128u << 10)
#define DS_RESTORE_LONG_SLOTS 8u
#define DS_RESTORE_LONG_DEPTH 4u
#define DS_RESTORE_MAPPED_PIECE (2u << 20)
#define DS_RESTORE_DEPTH 64u /* slots: one bit each in a uint64_t */

/* A snapshot that needs at most this many reads is read synchronously, one
 * read at a time per reader thread, with one buffer and no AIO context: a
 * restore with AIO pays ~0.1 s more for setting it up, its 8 MiB of
 * buffers per reader and its teardown at exit, which is worth it from
 * somewhere between 512 reads of 128 KiB (synchronous 0.62 of the time)
 * and 2048 (1.25); 4399 small reads (a mixed guest's) took 1.33 of the
 * time (doc/benchmarks.md, "Small restores without AIO").  Overridable at
 * build time (-DDS_RESTORE_SYNC_READS=0u: always AIO) to measure that
 * again. */
#ifndef DS_RESTORE_SYNC_READS
#define DS_RESTORE_SYNC_READS 1024u
#endif
bool ds_restore_sync(const struct proto_snap_header *h);

/* An extent with pieces in flight: its CRC is the XOR of each piece's CRC
 * shifted past the bytes after it (CRC-32C is linear), so pieces may
 * complete in any order. */
struct ds_open_extent {
	uint64_t index, n_pages;
	uint32_t want, acc;
	uint32_t pending;	/* pieces submitted, not completed */
	bool submitting;	/* more pieces to come */
};

struct ds_piece {
	uint32_t extent;	/* its ds_open_extent */
	uint64_t len, after;	/* bytes, and bytes of its extent after it */
	uint64_t dest_off;	/* where it goes in the destination */
	uint32_t slots;		/* of the reader's buffers it holds */
	uint8_t *buf;		/* where it is read into */
};

struct ds_reader {
	struct ds_restore *restore;
	struct dio_queue queue;
	uint64_t bytes_done;	/* completed, not yet added to the statistics */
	uint64_t pages_done;
	uint8_t records[DS_EXTENT_BATCH * PROTO_SNAP_EXTENT_SIZE];
	uint8_t *bufs;		/* DS_RESTORE_DEPTH slots, O_DIRECT-aligned */
	uint64_t free_slots;	/* bit s: slot s is free */
	uint32_t max_slots;	/* that one piece may take */
	uint32_t long_pending;	/* pieces of more than one slot in flight */
	struct ds_piece piece[DS_RESTORE_DEPTH]; /* by first slot */
	struct ds_open_extent open[DS_RESTORE_DEPTH + 1];
	uint32_t free_open[DS_RESTORE_DEPTH + 1], n_free_open;
};

/* Read and check header, bitmap and extent table.  On a bad file returns
 * -EBADMSG with *why set to the protocol error's message; -errno otherwise
 * with *why naming the step. */
int ds_restore_open(struct ds_restore *r, int meta_fd, int data_fd, const char **why);
/* Size a new destination (holes everywhere; not in place) and open it for
 * ds_place, before lock-down; r->dest points at *pl afterwards. */
int ds_restore_open_dest(struct ds_restore *r, struct ds_place *pl, int dest_fd, const char **why);
/* Set up one reader: before lock-down (a snapshot without extents gets
 * no buffers and no AIO context). */
int ds_reader_init(struct ds_reader *rd, struct ds_restore *r);
/* Body of each reader thread (arg: its struct ds_reader).  Restore: claims
 * chunks of the page space and accounts for the pages the snapshot does not
 * have (in place: punches them, they may hold anything), then claims
 * batches of extent records, reads each extent's pages, checks them against
 * its CRC and writes them (pwrite: dest/ds_place.h says why not through a
 * mapping).  Check: the extents only, nothing written. */
void *ds_restore_reader(void *arg);
/* After the threads: 0, or -1 with what failed in line (one line, the
 * user's terms: a read, a write to a full destination, an extent that does
 * not match its checksum, a snapshot that changed). */
int ds_restore_result(struct ds_restore *r, char *line, size_t len);

#endif
