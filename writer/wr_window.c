#include "writer/wr_window.h"

#include <string.h>

#include "protocol/proto_crc32c.h"

/* x^(8 * 2^k pages) as byte tables: appending n pages to a CRC costs
 * popcount(n) table lookups of four loads, where proto_crc32c_combine
 * would cost popcount(n) + 1 multiplications of 32 steps (a mixed guest
 * has a data sub-run every few pages).  One page size per process. */
#define PAGE_SHIFTS 12 /* n_pages < 4096 */
static struct proto_crc32c_shift page_shift[PAGE_SHIFTS];
static uint32_t page_shift_size;

static uint32_t append_pages(uint32_t crc_a, uint32_t crc_b, uint32_t n_pages)
{
	for (unsigned k = 0; n_pages; k++, n_pages >>= 1)
		if (n_pages & 1)
			crc_a = proto_crc32c_shift_combine(&page_shift[k], crc_a, 0);
	return crc_a ^ crc_b;
}

void wr_window_init(struct wr_window *w, uint32_t max_pages, uint32_t page_size)
{
	if (page_shift_size != page_size) {
		for (unsigned k = 0; k < PAGE_SHIFTS; k++)
			proto_crc32c_shift_init(&page_shift[k], (uint64_t)page_size << k);
		page_shift_size = page_size;
	}
	memset(w, 0, sizeof(*w));
	w->max_pages = max_pages;
	w->page_size = page_size;
}

bool wr_window_fits(const struct wr_window *w, uint64_t first, uint32_t n, bool data)
{
	if (w->n_pages == 0)
		return true;
	if (first != w->first + w->n_pages || n > w->max_pages - w->n_pages)
		return false;
	return !data || w->n_extents < WR_WINDOW_MAX_EXTENTS;
}

void wr_window_add(struct wr_window *w, uint64_t first, uint32_t n, const uint8_t *data, uint32_t crc)
{
	if (w->n_pages == 0) {
		w->first = first;
		memset(w->bitmap, 0, sizeof(w->bitmap));
	}
	uint32_t at = w->n_pages;
	w->n_pages += n;
	if (!data)
		return;
	w->present += n;
	w->data_crc = append_pages(w->data_crc, crc, n);
	for (uint32_t k = at; k < at + n; k++)
		w->bitmap[k / 8] |= (uint8_t)(1u << (k % 8));
	size_t len = (size_t)n * w->page_size;
	/* Two data sub-runs are adjacent only across a run boundary. */
	struct iovec *last = w->n_extents ? &w->extents[w->n_extents - 1] : NULL;
	if (last && (const uint8_t *)last->iov_base + last->iov_len == data)
		last->iov_len += len;
	else
		w->extents[w->n_extents++] = (struct iovec){ (void *)data, len };
}

void wr_window_packet(const struct wr_window *w, struct proto_packet *p, uint32_t *prefix_len)
{
	p->type = PROTO_PKT_DATA;
	p->first_page = w->first;
	p->n_pages = w->n_pages;
	*prefix_len = 0;
	if (w->present == 0) {
		p->encoding = PROTO_ENC_ZERO;
		p->payload_len = 0;
		p->payload_crc = 0;
	} else if (w->present == w->n_pages) {
		p->encoding = PROTO_ENC_RAW;
		p->payload_len = w->present * w->page_size;
		p->payload_crc = w->data_crc;
	} else {
		p->encoding = PROTO_ENC_SPARSE;
		*prefix_len = proto_sparse_bitmap_bytes(w->n_pages);
		p->payload_len = *prefix_len + w->present * w->page_size;
		p->payload_crc = append_pages(proto_crc32c(0, w->bitmap, *prefix_len), w->data_crc, w->present);
	}
}
