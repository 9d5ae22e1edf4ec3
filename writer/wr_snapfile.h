/* Writing a snapshot file (layout in protocol/proto_snapfile.h): the header
 * and bitmap through a buffered fd, page data through an O_DIRECT fd with
 * many writes in flight (dio/dio_queue.h), each from memory its caller
 * owns until the write completes (released). */
#ifndef PF_WR_SNAPFILE_H
#define PF_WR_SNAPFILE_H

#include <stdint.h>

#include "dio/dio_queue.h"
#include "protocol/proto_snapfile.h"

/* Writes in flight.  Measured on ext4 over a virtual disk (bench/scatter_ref):
 * scattered 4-8 KiB writes gain up to ~128, sequential ones saturate by ~8.
 * (The workers' arena buffers the writes come from bound it first.) */
#define WR_SNAPFILE_DEPTH 128u
/* Extents adjacent in the file merge into one write of up to this size,
 * from up to DIO_QUEUE_MAX_IOV buffers: one write per 1 MiB run made a
 * random guest's snapshot 1.16x slower than 4 MiB ones (bench/ab.py). */
#define WR_SNAPFILE_MAX_WRITE (4u << 20)
/* Extent records buffered before one pwrite (64 KiB). */
#define WR_SNAPFILE_TABLE_BATCH 4096u

struct wr_snapfile {
	int meta_fd;
	int data_fd;
	int direct;		/* data_fd really has O_DIRECT */
	struct proto_snap_header hdr;
	uint8_t *bitmap;
	struct dio_queue queue;
	/* Called as each extent's write completes, with its owner. */
	void (*released)(void *ctx, uint32_t owner);
	void *released_ctx;
	/* Adjacent extents not yet submitted, as the next write. */
	struct wr_snapfile_write {
		uint64_t first, pages;
		uint32_t n;
		struct iovec iov[DIO_QUEUE_MAX_IOV];
		uint32_t owners[DIO_QUEUE_MAX_IOV];
	} pending, *in_flight;	/* in_flight: WR_SNAPFILE_DEPTH + 1 slots */
	uint32_t *free_slots, n_free;
	/* Extent table: records not yet written, and the CRC of all so far. */
	uint8_t *table_buf;
	uint32_t table_buffered;
	uint64_t table_written;
	/* Statistics */
	uint64_t bytes_written;	/* completed */
	uint64_t writes;	/* write requests submitted */
};

/* Size the file, write a WRITING header and an empty bitmap, set up the
 * queue.  -errno with *what naming the step on failure. */
int wr_snapfile_begin(struct wr_snapfile *f, int meta_fd, int data_fd, uint32_t page_size,
		      uint64_t guest_size, const char **what);
/* The VMM's device state, the whole of file state_fd (1 byte up to
 * PROTO_SNAP_STATE_MAX), copied after the page data through a small static
 * buffer (no allocation: it runs after lock-down), with its length and
 * CRC-32C in the header, which says COMPLETE only at wr_snapfile_finish.
 * -EMSGSIZE for a bad length. */
int wr_snapfile_copy_state(struct wr_snapfile *f, int state_fd, const char **what);
/* An eventfd that becomes readable as writes complete (for poll; made here,
 * once, before lock-down), or -errno. */
int wr_snapfile_notify_fd(struct wr_snapfile *f);
/* Pages [first, first+n) from `src` (aligned for O_DIRECT) go to their
 * fixed offset, merged with the extent before when adjacent; `src` is not
 * the caller's again until f->released(ctx, owner) says its write
 * completed.  A page's bitmap bit is set only then.  crc (the worker's
 * CRC-32C of the pages) becomes one extent record.  -errno if this or an
 * earlier write failed; -E2BIG if there are more extents than pages (a
 * worker repeats pages). */
int wr_snapfile_add_extent(struct wr_snapfile *f, const uint8_t *src, uint64_t first, uint32_t n, uint32_t crc,
			   uint32_t owner);
/* Submit what is pending without waiting (call before going idle). */
int wr_snapfile_flush(struct wr_snapfile *f);
/* Take the writes that completed, without waiting. */
int wr_snapfile_reap(struct wr_snapfile *f);
/* Wait for every write to complete. */
int wr_snapfile_drain(struct wr_snapfile *f, const char **what);
/* Wait for every write, make the data durable, then the bitmap and extent
 * table, then mark the header COMPLETE and make that durable: a crash at any
 * point leaves a file restore refuses. */
int wr_snapfile_finish(struct wr_snapfile *f, const char **what);

#endif
