/* A run record: what a worker found in one run, for the writer, in the run's
 * arena buffer (workers/wk_arena.h).  With it each run from the scanner
 * becomes exactly one descriptor to the writer, already in the form it goes
 * out in (proto_desc.h: ZERO, RAW, SPARSE or ZSTD), and a replaced worker
 * can resume by counting slots (doc/architecture.md, "Replacing a stage").
 *
 * Layout (little-endian, at the record's offset in the arena):
 *    0  2  n_fp        fingerprint contributions that follow
 *    2  2  n_extents   maximal runs of data pages, in page order
 *    4  4  reserved    0
 *    8  16*n_fp        {u64 chunk, u64 fingerprint XOR} (shm_layout.h)
 *    .  4*n_extents    CRC-32C of each extent's pages
 *    .  bitmap         SPARSE and ZSTD_SPARSE only: the packet's bitmap
 *                      (proto_sparse_bitmap_bytes(n_pages) bytes)
 *
 * The writer applies the fingerprints when it takes the descriptor, not the
 * worker when it computes them: a worker that dies between the two leaves
 * no XOR behind for its replacement to add twice.
 *
 * The record comes from a sandboxed process: wk_record_read checks every
 * field against the descriptor before anything is used. */
#ifndef PF_WK_RECORD_H
#define PF_WK_RECORD_H

#include <stdbool.h>
#include <stdint.h>

#include "protocol/proto_packet.h"

#define WK_RECORD_HEADER 8u
/* Room for the largest run (4095 pages): a chunk per page at most (huge
 * pages), an extent per two pages, the biggest bitmap. */
#define WK_RECORD_MAX_PAGES 4095u
#define WK_RECORD_BYTES                                                                                       \
	((WK_RECORD_HEADER + 16u * (WK_RECORD_MAX_PAGES + 1) + 4u * (WK_RECORD_MAX_PAGES / 2 + 1) +            \
	  PROTO_SPARSE_BITMAP_MAX + 4095u) / 4096u * 4096u)

struct wk_fp {
	uint64_t chunk, value;
};

/* A record as decoded: pointers into the reader's private copy. */
struct wk_record {
	uint32_t n_fp, n_extents;
	const uint8_t *fp;	/* n_fp entries of 16 bytes */
	const uint8_t *crcs;	/* n_extents u32 */
	const uint8_t *bitmap;	/* SPARSE and ZSTD_SPARSE only */
};

/* Writing one (the worker).  Start, add, then finish with the bitmap or
 * NULL.  `rec` points at the record's WK_RECORD_BYTES. */
struct wk_record_writer {
	uint8_t *rec;
	uint32_t n_fp, n_extents;
	struct wk_fp fp[WK_RECORD_MAX_PAGES + 1];
	uint32_t crc[WK_RECORD_MAX_PAGES / 2 + 1];
};
void wk_record_start(struct wk_record_writer *w, uint8_t *rec);
void wk_record_add_fp(struct wk_record_writer *w, uint64_t chunk, uint64_t value);
void wk_record_add_extent(struct wk_record_writer *w, uint32_t crc);
void wk_record_finish(struct wk_record_writer *w, const uint8_t *bitmap, uint32_t bitmap_bytes);

/* Copy the record of a run [first, first + n_pages) with the given encoding
 * out of the shared arena into `copy`, decode and check it: fingerprint
 * chunks inside the run's chunks, extent count matching the bitmap (SPARSE:
 * a valid bitmap with some but not all pages; RAW: one extent; ZSTD: none;
 * ZSTD_SPARSE: none, and a valid bitmap with some but not all pages).
 * fp_chunk_pages from the segment. */
bool wk_record_read(const uint8_t *shared, uint8_t encoding, uint64_t first, uint32_t n_pages,
		    uint32_t fp_chunk_pages, uint8_t copy[WK_RECORD_BYTES], struct wk_record *out);
static inline struct wk_fp wk_record_fp(const struct wk_record *r, uint32_t k)
{
	const uint8_t *p = r->fp + 16u * k;
	struct wk_fp f = { 0, 0 };
	for (int b = 7; b >= 0; b--) {
		f.chunk = f.chunk << 8 | p[b];
		f.value = f.value << 8 | p[8 + b];
	}
	return f;
}
static inline uint32_t wk_record_crc(const struct wk_record *r, uint32_t k)
{
	const uint8_t *p = r->crcs + 4u * k;
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
