#include "workers/wk_zstd.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

struct wk_zstd {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	int level;
};

struct wk_zstd *wk_zstd_new(int level, size_t max_src)
{
	struct wk_zstd *z = calloc(1, sizeof(*z));
	if (!z)
		return NULL;
	z->level = level;
	z->dctx = ZSTD_createDCtx();
	uint8_t *sample = calloc(1, max_src);
	size_t bound = ZSTD_compressBound(max_src);
	uint8_t *frame = malloc(bound);
	if (!z->dctx || !sample || !frame)
		goto fail;
	/* Content that defeats the early outs, so every table gets allocated. */
	for (size_t i = 0; i < max_src; i++)
		sample[i] = (uint8_t)((i * 2654435761u) >> 13);
	if (level > 0) {
		z->cctx = ZSTD_createCCtx();
		if (!z->cctx || ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1)))
			goto fail;
	}
	/* The warm-up: one frame each way at the largest size. */
	ZSTD_CCtx *warm = z->cctx ? z->cctx : ZSTD_createCCtx();
	size_t n = warm ? ZSTD_compress2(warm, frame, bound, sample, max_src) : 0;
	if (!z->cctx)
		ZSTD_freeCCtx(warm);
	if (!warm || ZSTD_isError(n) || ZSTD_decompressDCtx(z->dctx, sample, max_src, frame, n) != max_src)
		goto fail;
	free(sample);
	free(frame);
	return z;
fail:
	free(sample);
	free(frame);
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
	return NULL;
}

size_t wk_zstd_compress(struct wk_zstd *z, uint8_t *dst, const uint8_t *src, size_t src_len, size_t dst_cap)
{
	size_t n = ZSTD_compress2(z->cctx, dst, dst_cap, src, src_len);
	return ZSTD_isError(n) ? 0 : n;
}

enum proto_err wk_zstd_decompress(struct wk_zstd *z, uint8_t *dst, size_t dst_len, const uint8_t *src,
				  size_t src_len)
{
	unsigned long long declared = ZSTD_getFrameContentSize(src, src_len);
	if (declared == ZSTD_CONTENTSIZE_ERROR)
		return PROTO_E_ZSTD_FRAME;
	if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != dst_len)
		return PROTO_E_ZSTD_SIZE;
	size_t n = ZSTD_decompressDCtx(z->dctx, dst, dst_len, src, src_len);
	if (ZSTD_isError(n))
		return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? PROTO_E_ZSTD_SIZE : PROTO_E_ZSTD_FRAME;
	return n == dst_len ? PROTO_OK : PROTO_E_ZSTD_SIZE;
}
