/* zstd for one worker: a context made and warmed up before lock-down, so
 * that compressing or decompressing never allocates afterwards (the worker
 * sandbox has no mmap). */
#ifndef PF_WK_ZSTD_H
#define PF_WK_ZSTD_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_error.h"

struct wk_zstd;

/* level 0: decompression only.  max_src: the largest input (a run's bytes). */
struct wk_zstd *wk_zstd_new(int level, size_t max_src);
/* Bytes of the frame written to dst, or 0 when the pages do not fit in
 * dst_cap bytes (they then go raw). */
size_t wk_zstd_compress(struct wk_zstd *z, uint8_t *dst, const uint8_t *src, size_t src_len, size_t dst_cap);
/* Decompress one untrusted payload into exactly dst_len bytes.
 * PROTO_E_ZSTD_SIZE if it holds any other amount, PROTO_E_ZSTD_FRAME if it is
 * not valid zstd. */
enum proto_err wk_zstd_decompress(struct wk_zstd *z, uint8_t *dst, size_t dst_len, const uint8_t *src,
				  size_t src_len);

#endif
