#include "protocol/proto_snapfile.h"

#include <string.h>

#include "protocol/proto_bytes.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_geometry.h"

static const uint8_t snap_magic[8] = { 'P', 'G', 'F', 'E', 'R', 'R', 'Y', 0x1a };

static uint64_t bitmap_len_for(uint64_t n_pages)
{
	return (n_pages + 63) / 64 * 8;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static uint64_t table_offset_for(uint64_t bitmap_len)
{
	return align_up(PROTO_SNAP_HEADER_SIZE + bitmap_len, PROTO_SNAP_TABLE_ALIGN);
}

/* After the extent table's worst case: one record per page. */
static uint64_t data_offset_for(uint64_t bitmap_len, uint64_t n_pages)
{
	return align_up(table_offset_for(bitmap_len) + n_pages * PROTO_SNAP_EXTENT_SIZE, PROTO_SNAP_DATA_ALIGN);
}

enum proto_err proto_snap_header_init(struct proto_snap_header *h, uint32_t page_size,
				      uint64_t guest_size)
{
	if (!proto_page_size_valid(page_size))
		return PROTO_E_PAGE_SIZE;
	if (guest_size == 0 || guest_size % page_size ||
	    !proto_guest_pages_valid(page_size, guest_size / page_size))
		return PROTO_E_GUEST_SIZE;
	memset(h, 0, sizeof(*h));
	h->state = PROTO_SNAP_WRITING;
	h->page_size = page_size;
	h->guest_size = guest_size;
	h->n_pages = guest_size / page_size;
	h->bitmap_offset = PROTO_SNAP_HEADER_SIZE;
	h->bitmap_len = bitmap_len_for(h->n_pages);
	h->extent_table_offset = table_offset_for(h->bitmap_len);
	h->data_offset = data_offset_for(h->bitmap_len, h->n_pages);
	return PROTO_OK;
}

void proto_snap_header_encode(const struct proto_snap_header *h, uint8_t out[PROTO_SNAP_FIELDS_SIZE])
{
	memset(out, 0, PROTO_SNAP_FIELDS_SIZE);
	memcpy(out, snap_magic, 8);
	put_le32(out + 8, PROTO_SNAP_VERSION);
	put_le32(out + 12, h->state);
	put_le32(out + 16, h->page_size);
	put_le32(out + 20, h->flags);
	put_le64(out + 24, h->guest_size);
	put_le64(out + 32, h->n_pages);
	put_le64(out + 40, h->bitmap_offset);
	put_le64(out + 48, h->bitmap_len);
	put_le64(out + 56, h->data_offset);
	put_le64(out + 64, h->pages_present);
	memcpy(out + 72, h->snapshot_id, 16);
	put_le32(out + 88, h->bitmap_crc);
	put_le32(out + 92, h->extent_crc);
	put_le64(out + 96, h->extent_table_offset);
	put_le64(out + 104, h->extent_count);
	put_le32(out + 112, h->device_state_len);
	put_le32(out + 116, h->device_state_crc);
	put_le32(out + 124, proto_crc32c(0, out, 124));
}

enum proto_err proto_snap_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
					struct proto_snap_header *out)
{
	if (len < PROTO_SNAP_FIELDS_SIZE || file_size < PROTO_SNAP_HEADER_SIZE)
		return PROTO_E_TRUNCATED;
	if (memcmp(buf, snap_magic, 8) != 0)
		return PROTO_E_MAGIC;
	if (get_le32(buf + 8) == 1)
		return PROTO_E_SNAP_OLD_VERSION;
	if (get_le32(buf + 8) != PROTO_SNAP_VERSION)
		return PROTO_E_VERSION;
	if (get_le32(buf + 124) != proto_crc32c(0, buf, 124))
		return PROTO_E_HEADER_CHECKSUM;
	uint32_t flags = get_le32(buf + 20), state_len = get_le32(buf + 112), state_crc = get_le32(buf + 116);
	if (flags & ~PROTO_SNAP_F_DEVICE_STATE)
		return PROTO_E_FLAGS;
	if (!all_zero(buf + 120, 4) || (!(flags & PROTO_SNAP_F_DEVICE_STATE) && (state_len || state_crc)))
		return PROTO_E_RESERVED;
	if ((flags & PROTO_SNAP_F_DEVICE_STATE) && (state_len == 0 || state_len > PROTO_SNAP_STATE_MAX))
		return PROTO_E_DEVICE_STATE_LEN;

	struct proto_snap_header h = {
		.state = get_le32(buf + 12),
		.page_size = get_le32(buf + 16),
		.guest_size = get_le64(buf + 24),
		.n_pages = get_le64(buf + 32),
		.bitmap_offset = get_le64(buf + 40),
		.bitmap_len = get_le64(buf + 48),
		.data_offset = get_le64(buf + 56),
		.pages_present = get_le64(buf + 64),
		.bitmap_crc = get_le32(buf + 88),
		.extent_crc = get_le32(buf + 92),
		.extent_table_offset = get_le64(buf + 96),
		.extent_count = get_le64(buf + 104),
		.flags = flags,
		.device_state_len = state_len,
		.device_state_crc = state_crc,
	};
	memcpy(h.snapshot_id, buf + 72, 16);

	if (h.state == PROTO_SNAP_WRITING)
		return PROTO_E_SNAP_INCOMPLETE;
	if (h.state != PROTO_SNAP_COMPLETE)
		return PROTO_E_SNAP_STATE;
	if (!proto_page_size_valid(h.page_size))
		return PROTO_E_PAGE_SIZE;
	if (h.n_pages == 0 || !proto_guest_pages_valid(h.page_size, h.n_pages) ||
	    h.guest_size != h.n_pages * h.page_size)
		return PROTO_E_GUEST_SIZE;
	if (h.bitmap_offset != PROTO_SNAP_HEADER_SIZE)
		return PROTO_E_BITMAP_OFFSET;
	if (h.bitmap_len != bitmap_len_for(h.n_pages))
		return PROTO_E_BITMAP_LEN;
	if (h.extent_table_offset != table_offset_for(h.bitmap_len))
		return PROTO_E_EXTENT_TABLE;
	if (h.data_offset != data_offset_for(h.bitmap_len, h.n_pages))
		return PROTO_E_DATA_OFFSET;
	if (h.pages_present > h.n_pages)
		return PROTO_E_PRESENT_COUNT;
	if (h.extent_count > h.pages_present)
		return PROTO_E_EXTENT_COUNT;
	/* The writer sizes the file to cover every page slot before it marks
	 * the snapshot complete; a shorter file was truncated afterwards. */
	if (file_size < h.data_offset + h.guest_size + h.device_state_len)
		return PROTO_E_SNAP_FILE_SIZE;
	*out = h;
	return PROTO_OK;
}

enum proto_err proto_snap_bitmap_check(const struct proto_snap_header *h, const uint8_t *bitmap,
				       size_t len)
{
	if (len < h->bitmap_len)
		return PROTO_E_TRUNCATED;
	if (proto_crc32c(0, bitmap, h->bitmap_len) != h->bitmap_crc)
		return PROTO_E_BITMAP_CHECKSUM;
	uint64_t present = 0;
	for (uint64_t w = 0; w < h->bitmap_len / 8; w++)
		present += (uint64_t)__builtin_popcountll(get_le64(bitmap + w * 8));
	for (uint64_t bit = h->n_pages; bit < h->bitmap_len * 8; bit++)
		if (proto_bitmap_test(bitmap, bit))
			return PROTO_E_BITMAP_TAIL;
	if (present != h->pages_present)
		return PROTO_E_PRESENT_COUNT;
	return PROTO_OK;
}

void proto_snap_extent_encode(const struct proto_snap_extent *e, uint8_t out[PROTO_SNAP_EXTENT_SIZE])
{
	put_le64(out, e->first_page);
	put_le32(out + 8, e->n_pages);
	put_le32(out + 12, e->crc);
}

enum proto_err proto_snap_extent_decode(const uint8_t in[PROTO_SNAP_EXTENT_SIZE], const struct proto_snap_header *h,
					struct proto_snap_extent *out)
{
	struct proto_snap_extent e = { .first_page = get_le64(in), .n_pages = get_le32(in + 8),
				       .crc = get_le32(in + 12) };
	if (e.n_pages == 0 || e.first_page >= h->n_pages || e.n_pages > h->n_pages - e.first_page)
		return PROTO_E_EXTENT_RANGE;
	*out = e;
	return PROTO_OK;
}

enum proto_err proto_snap_extent_claim(const struct proto_snap_header *h, const uint8_t *bitmap, uint8_t *seen,
				       const struct proto_snap_extent *e)
{
	(void)h; /* the range was checked by proto_snap_extent_decode */
	for (uint64_t p = e->first_page; p < e->first_page + e->n_pages; p++) {
		if (!proto_bitmap_test(bitmap, p))
			return PROTO_E_EXTENT_ABSENT;
		if (proto_bitmap_test(seen, p))
			return PROTO_E_EXTENT_OVERLAP;
		proto_bitmap_set(seen, p);
	}
	return PROTO_OK;
}

enum proto_err proto_snap_extents_end(const struct proto_snap_header *h, uint64_t total, uint32_t table_crc)
{
	if (table_crc != h->extent_crc)
		return PROTO_E_EXTENT_CHECKSUM;
	if (total != h->pages_present)
		return PROTO_E_EXTENT_TOTAL;
	return PROTO_OK;
}
