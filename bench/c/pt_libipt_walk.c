/* libipt's packet decoder alone over a raw PT trace, timed: the reference for bench_pt.py.
 *
 * Loops pt_pkt_sync_forward / pt_pkt_next over the whole buffer (resyncing after an
 * error, as ptdump does) REPEAT times and prints "bytes packets seconds" (CPU time of
 * the walks only; the file is read before the clock starts).
 *
 * Build: gcc -O2 -o pt_libipt_walk pt_libipt_walk.c -lipt
 */
#include <intel-pt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	struct pt_config config;
	struct pt_packet_decoder *dec;
	struct pt_packet pkt;
	struct timespec t0, t1;
	unsigned long long packets = 0;
	uint8_t *buf;
	long size, r, repeat;
	FILE *f;
	int err;

	if (argc != 3) {
		fprintf(stderr, "usage: %s TRACE REPEAT\n", argv[0]);
		return 2;
	}
	repeat = atol(argv[2]);
	f = fopen(argv[1], "rb");
	if (!f || fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(argv[1]);
		return 2;
	}
	buf = malloc(size ? size : 1);
	if (!buf || fread(buf, 1, size, f) != (size_t) size) {
		perror(argv[1]);
		return 2;
	}
	fclose(f);
	pt_config_init(&config);
	config.begin = buf;
	config.end = buf + size;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	for (r = 0; r < repeat; ++r) {
		dec = pt_pkt_alloc_decoder(&config);
		if (!dec)
			return 2;
		for (err = pt_pkt_sync_forward(dec); err >= 0; err = pt_pkt_sync_forward(dec)) {
			while ((err = pt_pkt_next(dec, &pkt, sizeof(pkt))) >= 0)
				packets += 1;
			if (err == -pte_eos)
				break;
		}
		pt_pkt_free_decoder(dec);
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	printf("%ld %llu %.6f\n", size * repeat, packets,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
	free(buf);
	return 0;
}
