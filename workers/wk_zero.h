/* Zero-page detection by content. */
#ifndef PF_WK_ZERO_H
#define PF_WK_ZERO_H

#include <stdbool.h>
#include <stddef.h>

/* len must be a multiple of 256 and p 32-byte aligned (pages are). */
bool wk_page_is_zero(const void *p, size_t len);

#endif
