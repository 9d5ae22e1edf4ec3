/* Writing a snapshot file (layout in protocol/proto_snapfile.h): the header
 * and bitmap through a buffered fd, page data through an O_DIRECT fd. */
#ifndef PF_WR_SNAPFILE_H
#define PF_WR_SNAPFILE_H

#include <stdint.h>

#include "protocol/proto_snapfile.h"

struct wr_snapfile {
	int meta_fd;
	int data_fd;
	int direct;		/* data_fd really has O_DIRECT */
	struct proto_snap_header hdr;
	uint8_t *bitmap;
	uint64_t bytes_written;
	uint64_t pwrite_calls;
};

/* Size the file, write a WRITING header and an empty bitmap.  -errno with
 * *what naming the step on failure. */
int wr_snapfile_begin(struct wr_snapfile *f, int meta_fd, int data_fd, uint32_t page_size,
		      uint64_t guest_size, const char **what);
/* Write pages [first, first+n) from `src` (the guest mapping at page `first`)
 * to their fixed offset.  Handles short writes. */
int wr_snapfile_write_run(struct wr_snapfile *f, const uint8_t *src, uint64_t first, uint32_t n);
/* Make the data durable, then the bitmap, then mark the header COMPLETE and
 * make that durable: a crash at any point leaves a file restore refuses. */
int wr_snapfile_finish(struct wr_snapfile *f, const char **what);

#endif
