/* Packet counts of a raw Intel PT trace by Intel's libipt packet decoder.
 *
 * Walks the trace as ptdump does: pt_pkt_sync_forward, pt_pkt_next until an error,
 * then pt_pkt_sync_forward again (the end of the trace ends the walk). Prints one
 * "NAME COUNT" line per packet type seen (malsensor's names; mode split into
 * mode.exec / mode.tsx, tnt by size) and "errors N", "resyncs N".
 *
 * Build: gcc -O2 -o pt_libipt_count pt_libipt_count.c -lipt
 */
#include <intel-pt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 64 };

static const char *name_of(const struct pt_packet *p)
{
	switch (p->type) {
	case ppt_pad: return "pad";
	case ppt_psb: return "psb";
	case ppt_psbend: return "psbend";
	case ppt_fup: return "fup";
	case ppt_tip: return "tip";
	case ppt_tip_pge: return "tip.pge";
	case ppt_tip_pgd: return "tip.pgd";
	case ppt_tnt_8: return "tnt.8";
	case ppt_tnt_64: return "tnt.64";
	case ppt_mode: return p->payload.mode.leaf == pt_mol_exec ? "mode.exec" : "mode.tsx";
	case ppt_pip: return "pip";
	case ppt_vmcs: return "vmcs";
	case ppt_cbr: return "cbr";
	case ppt_tsc: return "tsc";
	case ppt_tma: return "tma";
	case ppt_mtc: return "mtc";
	case ppt_cyc: return "cyc";
	case ppt_stop: return "stop";
	case ppt_ovf: return "ovf";
	case ppt_mnt: return "mnt";
	case ppt_exstop: return "exstop";
	case ppt_mwait: return "mwait";
	case ppt_pwre: return "pwre";
	case ppt_pwrx: return "pwrx";
	case ppt_ptw: return "ptw";
	case ppt_invalid: return "invalid";
	default: return "unknown";
	}
}

int main(int argc, char **argv)
{
	const char *names[N];
	unsigned long long counts[N], errors = 0, resyncs = 0;
	int nnames = 0, err, i;
	struct pt_config config;
	struct pt_packet_decoder *dec;
	struct pt_packet pkt;
	uint8_t *buf;
	long size;
	FILE *f;

	if (argc != 2) {
		fprintf(stderr, "usage: %s TRACE\n", argv[0]);
		return 2;
	}
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
	dec = pt_pkt_alloc_decoder(&config);
	if (!dec)
		return 2;

	for (err = pt_pkt_sync_forward(dec); err >= 0; err = pt_pkt_sync_forward(dec)) {
		for (;;) {
			const char *name;

			err = pt_pkt_next(dec, &pkt, sizeof(pkt));
			if (err < 0)
				break;
			name = name_of(&pkt);
			for (i = 0; i < nnames && strcmp(names[i], name); ++i)
				;
			if (i == nnames) {
				names[nnames] = name;
				counts[nnames++] = 0;
			}
			counts[i] += 1;
		}
		if (err == -pte_eos)
			break;
		errors += 1;
		resyncs += 1;
	}
	for (i = 0; i < nnames; ++i)
		printf("%s %llu\n", names[i], counts[i]);
	printf("errors %llu\n", errors);
	pt_pkt_free_decoder(dec);
	free(buf);
	return 0;
}
