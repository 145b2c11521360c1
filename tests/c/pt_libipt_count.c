/* Packet counts of a raw Intel PT trace by Intel's libipt packet decoder.
 *
 * Walks the trace as ptdump does: pt_pkt_sync_forward, pt_pkt_next until an error,
 * then pt_pkt_sync_forward again (the end of the trace ends the walk). Prints one
 * "NAME COUNT" line per packet type seen (malsensor's names; mode split into
 * mode.exec / mode.tsx, tnt by size) and "errors N". The loop is pt_libipt_loop.h's,
 * shared with bench/c/pt_libipt_walk.c.
 *
 * Build: gcc -O2 -o pt_libipt_count pt_libipt_count.c -lipt
 */
#include <string.h>

#include "pt_libipt_loop.h"

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

struct tally {
	const char *names[N];
	unsigned long long counts[N];
	int n;
};

static void count(const struct pt_packet *pkt, void *ctx)
{
	struct tally *t = ctx;
	const char *name = name_of(pkt);
	int i;

	for (i = 0; i < t->n && strcmp(t->names[i], name); ++i)
		;
	if (i == t->n) {
		t->names[t->n] = name;
		t->counts[t->n++] = 0;
	}
	t->counts[i] += 1;
}

int main(int argc, char **argv)
{
	struct tally t = { .n = 0 };
	unsigned long long errors;
	uint8_t *buf;
	long size;
	int i;

	if (argc != 2) {
		fprintf(stderr, "usage: %s TRACE\n", argv[0]);
		return 2;
	}
	buf = pt_read_file(argv[1], &size);
	if (!buf || pt_walk(buf, size, count, &t, &errors) < 0)
		return 2;
	for (i = 0; i < t.n; ++i)
		printf("%s %llu\n", t.names[i], t.counts[i]);
	printf("errors %llu\n", errors);
	free(buf);
	return 0;
}
