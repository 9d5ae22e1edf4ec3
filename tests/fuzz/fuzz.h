/* What every libFuzzer target here shares.
 *
 * A broken invariant must be a crash, not a silent return: CHECK names the
 * condition on stderr and aborts, which libFuzzer reports with the input.
 *
 * Most formats end in a CRC-32C, so a random mutation is refused at the
 * checksum and never reaches the field checks behind it.  Each target's
 * input therefore starts with a flags byte: a set bit asks the target to
 * recompute one checksum after mutation ("fix it up"), so the fuzzer can
 * explore the fields behind it; a clear bit leaves the bytes exactly as
 * recorded, so the checksum checks themselves are fuzzed too.  Seeds cut
 * from real transfers have flags 0. */
#ifndef PF_FUZZ_H
#define PF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                           \
		}                                                                          \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
