/* The libipt packet loop shared by tests/c/pt_libipt_count.c (packet counts the tests compare)
 * and bench/c/pt_libipt_walk.c (the speed reference of bench/bench_pt.py).
 *
 * pt_walk() walks a raw Intel PT buffer as ptdump does: pt_pkt_sync_forward, pt_pkt_next
 * until an error, then pt_pkt_sync_forward again; the end of the buffer ends the walk. It
 * calls on_packet (when not NULL) for every packet and returns the packets seen; *errors
 * gets the decode errors (each followed by a resync). Header-only: static inline, so a NULL
 * on_packet compiles to the bare loop the benchmark times.
 */
#ifndef PT_LIBIPT_LOOP_H
#define PT_LIBIPT_LOOP_H

#include <intel-pt.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file in a malloc'ed buffer (size in *size), or NULL after printing why. */
static inline uint8_t *pt_read_file(const char *path, long *size)
{
	uint8_t *buf;
	FILE *f = fopen(path, "rb");

	if (!f || fseek(f, 0, SEEK_END) || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(path);
		return NULL;
	}
	buf = malloc(*size ? *size : 1);
	if (!buf || fread(buf, 1, *size, f) != (size_t) *size) {
		perror(path);
		return NULL;
	}
	fclose(f);
	return buf;
}

static inline long long pt_walk(uint8_t *buf, long size, void (*on_packet)(const struct pt_packet *, void *),
				 void *ctx, unsigned long long *errors)
{
	struct pt_config config;
	struct pt_packet_decoder *dec;
	struct pt_packet pkt;
	unsigned long long packets = 0;
	int err;

	pt_config_init(&config);
	config.begin = buf;
	config.end = buf + size;
	dec = pt_pkt_alloc_decoder(&config);
	if (!dec)
		return -1;
	*errors = 0;
	for (err = pt_pkt_sync_forward(dec); err >= 0; err = pt_pkt_sync_forward(dec)) {
		while ((err = pt_pkt_next(dec, &pkt, sizeof(pkt))) >= 0) {
			packets += 1;
			if (on_packet)
				on_packet(&pkt, ctx);
		}
		if (err == -pte_eos)
			break;
		*errors += 1;
	}
	pt_pkt_free_decoder(dec);
	return (long long) packets;
}

#endif
