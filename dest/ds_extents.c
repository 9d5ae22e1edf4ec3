#include "dest/ds_extents.h"

#include <errno.h>
#include <stdlib.h>

#include "dio/dio_sync.h"
#include "protocol/proto_crc32c.h"
#include "protocol/proto_error.h"

int ds_extents_read(int meta_fd, const struct proto_snap_header *h, uint64_t first, uint32_t n, uint8_t *buf)
{
	return dio_pread_full(meta_fd, buf, (uint64_t)n * PROTO_SNAP_EXTENT_SIZE,
			      h->extent_table_offset + first * PROTO_SNAP_EXTENT_SIZE);
}

#define BAD(err)                              \
	do {                                  \
		*why = proto_strerror(err);   \
		rc = -EBADMSG;                \
		goto out;                     \
	} while (0)

int ds_extents_validate(int meta_fd, const struct proto_snap_header *h, const uint8_t *bitmap, const char **why)
{
	int rc = 0;
	uint8_t *batch = malloc(DS_EXTENT_BATCH * PROTO_SNAP_EXTENT_SIZE);
	uint8_t *seen = calloc(1, h->bitmap_len);
	if (!batch || !seen) {
		*why = "allocating memory to check the extent table";
		rc = -ENOMEM;
		goto out;
	}
	/* Pass 1: the table's CRC, so that damage to it is named as such. */
	uint32_t crc = 0;
	for (uint64_t i = 0; i < h->extent_count; i += DS_EXTENT_BATCH) {
		uint32_t n = (uint32_t)(h->extent_count - i < DS_EXTENT_BATCH ? h->extent_count - i : DS_EXTENT_BATCH);
		if ((rc = ds_extents_read(meta_fd, h, i, n, batch)) < 0) {
			*why = "reading the snapshot's extent table";
			goto out;
		}
		crc = proto_crc32c(crc, batch, (size_t)n * PROTO_SNAP_EXTENT_SIZE);
	}
	if (crc != h->extent_crc)
		BAD(PROTO_E_EXTENT_CHECKSUM);
	/* Pass 2: every record. */
	uint64_t total = 0;
	for (uint64_t i = 0; i < h->extent_count; i += DS_EXTENT_BATCH) {
		uint32_t n = (uint32_t)(h->extent_count - i < DS_EXTENT_BATCH ? h->extent_count - i : DS_EXTENT_BATCH);
		if ((rc = ds_extents_read(meta_fd, h, i, n, batch)) < 0) {
			*why = "reading the snapshot's extent table";
			goto out;
		}
		for (uint32_t k = 0; k < n; k++) {
			struct proto_snap_extent e;
			enum proto_err err = proto_snap_extent_decode(batch + k * PROTO_SNAP_EXTENT_SIZE, h, &e);
			if (err == PROTO_OK)
				err = proto_snap_extent_claim(h, bitmap, seen, &e);
			if (err != PROTO_OK)
				BAD(err);
			total += e.n_pages;
		}
	}
	enum proto_err err = proto_snap_extents_end(h, total, crc);
	if (err != PROTO_OK)
		BAD(err);
out:
	free(batch);
	free(seen);
	return rc;
}
