#include "workers/wk_record.h"

#include <string.h>

#include "protocol/proto_bytes.h"

void wk_record_start(struct wk_record_writer *w, uint8_t *rec)
{
	w->rec = rec;
	w->n_fp = w->n_extents = 0;
}

void wk_record_add_fp(struct wk_record_writer *w, uint64_t chunk, uint64_t value)
{
	w->fp[w->n_fp++] = (struct wk_fp){ chunk, value };
}

void wk_record_add_extent(struct wk_record_writer *w, uint32_t crc)
{
	w->crc[w->n_extents++] = crc;
}

void wk_record_finish(struct wk_record_writer *w, const uint8_t *bitmap, uint32_t bitmap_bytes)
{
	uint8_t *p = w->rec;
	put_le16(p, (uint16_t)w->n_fp);
	put_le16(p + 2, (uint16_t)w->n_extents);
	put_le32(p + 4, 0);
	p += WK_RECORD_HEADER;
	for (uint32_t k = 0; k < w->n_fp; k++, p += 16) {
		put_le64(p, w->fp[k].chunk);
		put_le64(p + 8, w->fp[k].value);
	}
	for (uint32_t k = 0; k < w->n_extents; k++, p += 4)
		put_le32(p, w->crc[k]);
	if (bitmap)
		memcpy(p, bitmap, bitmap_bytes);
}

bool wk_record_read(const uint8_t *shared, uint8_t encoding, uint64_t first, uint32_t n_pages,
		    uint32_t fp_chunk_pages, uint8_t copy[WK_RECORD_BYTES], struct wk_record *out)
{
	/* The worker can still write the record: read each byte once, into
	 * our copy, and decode only that. */
	memcpy(copy, shared, WK_RECORD_HEADER);
	uint32_t n_fp = get_le16(copy), n_extents = get_le16(copy + 2);
	if (get_le32(copy + 4) != 0 || n_fp > WK_RECORD_MAX_PAGES + 1 || n_extents > WK_RECORD_MAX_PAGES / 2 + 1)
		return false;
	uint32_t bitmap_bytes = proto_encoding_has_bitmap(encoding) ? proto_sparse_bitmap_bytes(n_pages) : 0;
	size_t len = WK_RECORD_HEADER + 16u * n_fp + 4u * n_extents + bitmap_bytes;
	memcpy(copy + WK_RECORD_HEADER, shared + WK_RECORD_HEADER, len - WK_RECORD_HEADER);
	out->n_fp = n_fp;
	out->n_extents = n_extents;
	out->fp = copy + WK_RECORD_HEADER;
	out->crcs = out->fp + 16u * n_fp;
	out->bitmap = NULL;
	/* Fingerprints only for the chunks the run covers. */
	uint64_t lo = first / fp_chunk_pages, hi = (first + n_pages - 1) / fp_chunk_pages;
	for (uint32_t k = 0; k < n_fp; k++) {
		struct wk_fp f = wk_record_fp(out, k);
		if (f.chunk < lo || f.chunk > hi)
			return false;
	}
	switch (encoding) {
	case PROTO_ENC_RAW:
		return n_extents == 1;
	case PROTO_ENC_ZSTD:
		return n_extents == 0;
	case PROTO_ENC_ZSTD_SPARSE: {
		/* The receiver checks the frame's length against the bitmap. */
		out->bitmap = out->crcs;
		uint32_t present;
		return n_extents == 0 && proto_sparse_bitmap_some(out->bitmap, n_pages, &present) == PROTO_OK;
	}
	case PROTO_ENC_SPARSE: {
		out->bitmap = out->crcs + 4u * n_extents;
		uint32_t present = 0, extents = 0, k = 0, start, run;
		while (proto_sparse_next_extent(out->bitmap, n_pages, &k, &start, &run)) {
			extents++;
			present += run;
		}
		/* Some pages but not all (else RAW or ZERO), nothing past the run. */
		return present > 0 && present < n_pages && extents == n_extents &&
		       proto_sparse_bitmap_check(out->bitmap, n_pages, present) == PROTO_OK;
	}
	default:
		return false;
	}
}
