#include "writer/wr_window.h"

#include <string.h>

void wr_window_init(struct wr_window *w, uint32_t max_pages, uint32_t page_size)
{
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

void wr_window_add(struct wr_window *w, uint64_t first, uint32_t n, const uint8_t *data)
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
	for (uint32_t k = at; k < at + n; k++)
		w->bitmap[k / 8] |= (uint8_t)(1u << (k % 8));
	/* Two data sub-runs are adjacent only across a run boundary. */
	struct iovec *last = w->n_extents ? &w->extents[w->n_extents - 1] : NULL;
	size_t len = (size_t)n * w->page_size;
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
	} else if (w->present == w->n_pages) {
		p->encoding = PROTO_ENC_RAW;
		p->payload_len = w->present * w->page_size;
	} else {
		p->encoding = PROTO_ENC_SPARSE;
		*prefix_len = proto_sparse_bitmap_bytes(w->n_pages);
		p->payload_len = *prefix_len + w->present * w->page_size;
	}
}
