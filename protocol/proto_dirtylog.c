#include "protocol/proto_dirtylog.h"

#include <string.h>

#include "protocol/proto_bytes.h"

void proto_dirtylog_init(uint8_t *base, uint32_t page_size, uint64_t n_pages)
{
	memset(base, 0, PROTO_DIRTYLOG_BITMAP_OFFSET);
	put_le64(base, PROTO_DIRTYLOG_MAGIC);
	put_le32(base + 8, PROTO_DIRTYLOG_VERSION);
	put_le32(base + 12, page_size);
	put_le64(base + 16, n_pages);
	put_le64(base + 24, PROTO_DIRTYLOG_BITMAP_OFFSET);
}

enum proto_err proto_dirtylog_check(const uint8_t *base, uint64_t file_size, uint32_t page_size,
				    uint64_t n_pages)
{
	if (file_size < PROTO_DIRTYLOG_BITMAP_OFFSET)
		return PROTO_E_TRUNCATED;
	if (get_le64(base) != PROTO_DIRTYLOG_MAGIC)
		return PROTO_E_MAGIC;
	if (get_le32(base + 8) != PROTO_DIRTYLOG_VERSION)
		return PROTO_E_VERSION;
	if (get_le32(base + 12) != page_size)
		return PROTO_E_PAGE_SIZE;
	if (get_le64(base + 16) != n_pages)
		return PROTO_E_GUEST_SIZE;
	if (get_le64(base + 24) != PROTO_DIRTYLOG_BITMAP_OFFSET)
		return PROTO_E_BITMAP_OFFSET;
	if (file_size < proto_dirtylog_size(n_pages))
		return PROTO_E_BITMAP_LEN;
	return PROTO_OK;
}
