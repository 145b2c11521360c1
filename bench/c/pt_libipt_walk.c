/* libipt's packet decoder alone over a raw PT trace, timed: the reference for bench_pt.py.
 *
 * Runs tests/c/pt_libipt_loop.h's loop (pt_pkt_sync_forward / pt_pkt_next over the whole
 * buffer, resyncing after an error, as ptdump does; the same loop the tests' packet counts
 * use) REPEAT times and prints "bytes packets seconds" (CPU time of the walks only; the
 * file is read before the clock starts).
 *
 * Build: gcc -O2 -I ../../tests/c -o pt_libipt_walk pt_libipt_walk.c -lipt
 */
#include <time.h>

#include "pt_libipt_loop.h"

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	unsigned long long packets = 0, errors;
	long long n;
	uint8_t *buf;
	long size, r, repeat;

	if (argc != 3) {
		fprintf(stderr, "usage: %s TRACE REPEAT\n", argv[0]);
		return 2;
	}
	repeat = atol(argv[2]);
	buf = pt_read_file(argv[1], &size);
	if (!buf)
		return 2;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	for (r = 0; r < repeat; ++r) {
		n = pt_walk(buf, size, NULL, NULL, &errors);
		if (n < 0)
			return 2;
		packets += n;
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	printf("%ld %llu %.6f\n", size * repeat, packets,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
	free(buf);
	return 0;
}
