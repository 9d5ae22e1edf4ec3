/* Gathers adjacent raw and zero sub-runs into one packet.
 *
 * A guest whose data and zero pages alternate every page or two (a mixed
 * guest) would otherwise cost one packet per 1-3 pages: a million headers
 * per 4 GiB, each decoded, checked and placed on its own.  The workers
 * split runs into sub-runs in order, so the writer sees a run's pieces one
 * after the other and can rebuild the whole window: one SPARSE packet (a
 * page bitmap, then the data pages), or RAW / ZERO when it is all one kind.
 */
#ifndef PF_WR_WINDOW_H
#define PF_WR_WINDOW_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "protocol/proto_packet.h"

/* Data sub-runs in one packet at most: bounds the iovecs of one sendmsg. */
#define WR_WINDOW_MAX_EXTENTS 256u

struct wr_window {
	uint32_t max_pages, page_size;
	uint64_t first;		/* first page of the window */
	uint32_t n_pages;	/* 0: empty */
	uint32_t present;	/* data pages among them */
	uint32_t n_extents;
	uint32_t data_crc;	/* CRC-32C of the data pages in order, from the workers' sub-run CRCs */
	struct iovec extents[WR_WINDOW_MAX_EXTENTS]; /* data sub-runs, in the guest mapping */
	uint8_t bitmap[PROTO_SPARSE_BITMAP_MAX];
};

void wr_window_init(struct wr_window *w, uint32_t max_pages, uint32_t page_size);
/* Can the sub-run [first, first + n) join the window (it continues it and
 * fits)?  When not, send the window first. */
bool wr_window_fits(const struct wr_window *w, uint64_t first, uint32_t n, bool data);
/* Add a sub-run: `data` points at its pages in the guest mapping, or NULL
 * for zero pages; `crc` is the CRC-32C of its pages the worker computed
 * (the writer never reads guest pages: sendfile does not). */
void wr_window_add(struct wr_window *w, uint64_t first, uint32_t n, const uint8_t *data, uint32_t crc);
/* The packet for the window (type, encoding, pages, payload length and
 * checksum) and its payload: the bitmap (SPARSE only, *prefix_len bytes)
 * then the extents. */
void wr_window_packet(const struct wr_window *w, struct proto_packet *p, uint32_t *prefix_len);
static inline bool wr_window_full(const struct wr_window *w)
{
	return w->n_pages == w->max_pages;
}
static inline void wr_window_clear(struct wr_window *w)
{
	w->n_pages = w->present = w->n_extents = w->data_crc = 0;
}

#endif
