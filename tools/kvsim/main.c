/*
 * kvsim -- the 32-bit x86 kernel address space, fixed versus dynamic segkp.
 *
 * Front end: option parsing, the layout (computed by libvmem's layout
 * model and drawn as illumos startup.c draws it), workload dispatch to an
 * engine (sim.h) and the outputs (table, JSON, SVG). The engine that runs
 * the library's allocators is linked in by sim.c; kvsim_engine_get() is
 * the one place that names it. Without it kvsim still computes and shows
 * layouts, and refuses workloads plainly instead of inventing numbers.
 *
 * Exit status: 0 success, 2 bad usage (including unreadable or malformed
 * --trace / --mix files), 1 the run failed (a configuration the kernel
 * would refuse, a boot failure, or no workload engine).
 *
 * Single-threaded.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmem/layout.h>

#include "drive.h"
#include "mix.h"
#include "report.h"
#include "sim.h"
#include "trace.h"

#define EXIT_USAGE 2
#define EXIT_RUNFAIL 1

typedef struct options {
	layout_params_t params;
	int both;               /* --placement both */
	unsigned workloads;
	uint64_t step;
	uint64_t seed;
	const char *trace_path;
	const char *mix_path;
	const char *svg_path;
	int charge_metadata;
	int json;
	int quiet;
} options_t;

/* The workload engine; sim.c provides kvsim_allocator_engine. */
static const kvsim_engine_t *
kvsim_engine_get(void)
{
	return &kvsim_allocator_engine;
}

static void
usage(FILE *f)
{
	fputs(
"usage: kvsim [options]\n"
"\n"
"Computes the kernel virtual address layout an illumos x86 kernel builds\n"
"from its tunables, draws it as startup.c does, and runs workloads on the\n"
"library's real allocators to compare a fixed segkp with segkp imported\n"
"from the kernel heap (the 2005 \"dynamic segkp\" change).\n"
"With no options: i386, 1 GiB, 2005 rules, 2-page stacks, fixed 200 MiB\n"
"segkp versus fromheap; thread storm, heap growth and frontier.\n"
"\n"
"Layout tunables:\n"
"  --mem SIZE          physical memory (default 1G). SIZE takes K, M, G, T\n"
"                      suffixes (powers of 1024) or plain bytes.\n"
"  --pae auto|on|off   i386 PAE (default auto: on above 4 GiB); without PAE\n"
"                      memory above 4 GiB is dropped, with PAE above 64 GiB.\n"
"  --kernelbase ADDR   the kernelbase boot property (hex or decimal); it is\n"
"                      rounded down to a large page and clamped to\n"
"                      0xE0000000. 0 (default) lets kernelbase float down\n"
"                      from 0xD4000000 by twice the page_t array.\n"
"  --segmapsize SIZE   segkmap size (default and minimum 16M on i386, 64M\n"
"                      on amd64).\n"
"  --segkpsize SIZE    size of a fixed segkp (default 200M on i386, 2G on\n"
"                      amd64, where 200M..8G is allowed and at most memory).\n"
"  --stack-pages N     default thread stack in pages, redzone not counted\n"
"                      (default 2 with 2005 rules, 3 with 2018, 5 on amd64).\n"
"  --rules 2005|2018   i386 rule set: 2005 (ptable_va, 2-page stacks) or\n"
"                      2018 (3-page stacks, memory capped at 16 GiB).\n"
"  --placement fixed|fromheap|both\n"
"                      segkp placement(s) to run (default both).\n"
"  --arch i386|amd64   architecture (default i386; amd64 for contrast).\n"
"\n"
"Workloads (need the workload engine):\n"
"  --workload LIST     comma-separated: storm (threads with default stacks\n"
"                      until creation fails), heap (kmem_alloc with the size\n"
"                      mix until the heap is exhausted), frontier (for heap\n"
"                      use B = 0, step, 2 step, ... the most threads that\n"
"                      still fit), replay (the --trace file), all, or none\n"
"                      (layout only). Default storm,heap,frontier, plus\n"
"                      replay when --trace is given.\n"
"  --step SIZE         frontier step of heap use (default 16M).\n"
"  --trace FILE        events to replay, one per line: TIME_US OP SIZE ID,\n"
"                      OP = alloc | free | thread_create | thread_exit\n"
"                      ('-' reads standard input; see docs/KVSIM.md).\n"
"  --mix FILE          kmem_alloc size mix (default: the built-in copy of\n"
"                      tools/kvsim/mixes/default.mix).\n"
"  --seed N            seed of the size-mix generator (default 1).\n"
"  --no-metadata       keep kernel metadata (boundary tags, segkp records)\n"
"                      off the simulated heap; the results then match the\n"
"                      analytic numbers of docs/KVSIM.md exactly.\n"
"\n"
"Output:\n"
"  --json              one JSON document on standard output instead of the\n"
"                      drawing and table (schema in docs/KVSIM.md).\n"
"  --svg FILE          write the frontier chart (threads against heap in\n"
"                      use, one line per placement) as SVG.\n"
"  --quiet             no layout drawing and no progress lines.\n"
"  -h, --help          this text.\n"
"\n"
"Exit status: 0 success; 2 bad usage or unreadable/malformed input file;\n"
"1 the run failed (configuration refused, boot failure, no engine).\n",
	    f);
}

static int
bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvsim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'kvsim --help'.\n");
	return EXIT_USAGE;
}

/* "1G", "512M", "4096", "0x1000"; -1 on junk or overflow. */
static int
parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	uint64_t mul = 1;
	char *end;

	if (*s == '-' || *s == '\0')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno != 0 || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': mul = 1ULL << 10; end++; break;
	case 'm': case 'M': mul = 1ULL << 20; end++; break;
	case 'g': case 'G': mul = 1ULL << 30; end++; break;
	case 't': case 'T': mul = 1ULL << 40; end++; break;
	default: break;
	}
	if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end != '\0' || (v != 0 && mul > UINT64_MAX / v))
		return -1;
	*out = v * mul;
	return 0;
}

static int
workload_bit(const char *tok, size_t len, unsigned *bits)
{
	static const struct { const char *name; unsigned bits; } w[] = {
		{ "storm", KVSIM_W_STORM }, { "heap", KVSIM_W_HEAP },
		{ "frontier", KVSIM_W_FRONTIER }, { "replay", KVSIM_W_REPLAY },
		{ "all", KVSIM_W_STORM | KVSIM_W_HEAP | KVSIM_W_FRONTIER |
		    KVSIM_W_REPLAY }, { "none", 0 } };
	size_t i;

	for (i = 0; i < sizeof (w) / sizeof (w[0]); i++) {
		if (strlen(w[i].name) == len &&
		    strncmp(w[i].name, tok, len) == 0) {
			*bits |= w[i].bits;
			return 0;
		}
	}
	return -1;
}

/* "storm,frontier" -> bits; -1 on an unknown or empty name. */
static int
parse_workloads(const char *s, unsigned *out)
{
	*out = 0;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);

		if (workload_bit(s, len, out) != 0)
			return -1;
		if (comma == NULL)
			return 0;
		s = comma + 1;
	}
}

/* One option with its value; returns 0, or an exit status. */
static int
apply_option(options_t *o, const char *name, const char *val, int *wl_set)
{
	layout_params_t *p = &o->params;
	uint64_t v;

	if (strcmp(name, "--mem") == 0) {
		if (parse_size(val, &p->physmem) != 0)
			return bad_usage("bad --mem '%s'", val);
	} else if (strcmp(name, "--pae") == 0) {
		if (strcmp(val, "auto") == 0)
			p->pae = LAYOUT_PAE_AUTO;
		else if (strcmp(val, "on") == 0)
			p->pae = 1;
		else if (strcmp(val, "off") == 0)
			p->pae = 0;
		else
			return bad_usage("--pae takes auto, on or off, not '%s'",
			    val);
	} else if (strcmp(name, "--kernelbase") == 0) {
		if (parse_size(val, &p->kernelbase_prop) != 0)
			return bad_usage("bad --kernelbase '%s'", val);
	} else if (strcmp(name, "--segmapsize") == 0) {
		if (parse_size(val, &p->segmapsize) != 0)
			return bad_usage("bad --segmapsize '%s'", val);
	} else if (strcmp(name, "--segkpsize") == 0) {
		if (parse_size(val, &p->segkpsize) != 0 || p->segkpsize == 0)
			return bad_usage("bad --segkpsize '%s'", val);
	} else if (strcmp(name, "--stack-pages") == 0) {
		if (parse_size(val, &v) != 0 || v < 1 || v > 256)
			return bad_usage("--stack-pages takes 1 to 256, not '%s'",
			    val);
		p->stack_pages = (unsigned)v;
	} else if (strcmp(name, "--rules") == 0) {
		if (strcmp(val, "2005") == 0)
			p->rules = LAYOUT_RULES_2005;
		else if (strcmp(val, "2018") == 0)
			p->rules = LAYOUT_RULES_2018;
		else
			return bad_usage("--rules takes 2005 or 2018, not '%s'",
			    val);
	} else if (strcmp(name, "--placement") == 0) {
		o->both = strcmp(val, "both") == 0;
		if (strcmp(val, "fixed") == 0)
			p->placement = LAYOUT_SEGKP_FIXED;
		else if (strcmp(val, "fromheap") == 0)
			p->placement = LAYOUT_SEGKP_FROMHEAP;
		else if (!o->both)
			return bad_usage("--placement takes fixed, fromheap or "
			    "both, not '%s'", val);
	} else if (strcmp(name, "--arch") == 0) {
		if (strcmp(val, "i386") == 0)
			p->arch = LAYOUT_I386;
		else if (strcmp(val, "amd64") == 0)
			p->arch = LAYOUT_AMD64;
		else
			return bad_usage("--arch takes i386 or amd64, not '%s'",
			    val);
	} else if (strcmp(name, "--workload") == 0) {
		if (parse_workloads(val, &o->workloads) != 0)
			return bad_usage("bad --workload '%s'", val);
		*wl_set = 1;
	} else if (strcmp(name, "--step") == 0) {
		if (parse_size(val, &o->step) != 0 || o->step < 4096)
			return bad_usage("--step must be at least 4K, not '%s'",
			    val);
	} else if (strcmp(name, "--seed") == 0) {
		if (parse_size(val, &o->seed) != 0)
			return bad_usage("bad --seed '%s'", val);
	} else if (strcmp(name, "--trace") == 0) {
		o->trace_path = val;
	} else if (strcmp(name, "--mix") == 0) {
		o->mix_path = val;
	} else if (strcmp(name, "--svg") == 0) {
		o->svg_path = val;
	} else {
		return bad_usage("unknown option '%s'", name);
	}
	return 0;
}

/* 1: option with a value, 0: flag, -1: unknown. */
static int
takes_value(const char *name)
{
	static const char *const flags[] = { "--no-metadata", "--json",
	    "--quiet" };
	static const char *const valued[] = { "--mem", "--pae",
	    "--kernelbase", "--segmapsize", "--segkpsize", "--stack-pages",
	    "--rules", "--placement", "--arch", "--workload", "--step",
	    "--seed", "--trace", "--mix", "--svg" };
	size_t i;

	for (i = 0; i < sizeof (flags) / sizeof (flags[0]); i++)
		if (strcmp(name, flags[i]) == 0)
			return 0;
	for (i = 0; i < sizeof (valued) / sizeof (valued[0]); i++)
		if (strcmp(name, valued[i]) == 0)
			return 1;
	return -1;
}

static int
parse_args(int argc, char **argv, options_t *o)
{
	int i, rc, wl_set = 0;

	memset(o, 0, sizeof (*o));
	layout_params_default(&o->params);
	o->both = 1;
	o->workloads = KVSIM_W_STORM | KVSIM_W_HEAP | KVSIM_W_FRONTIER;
	o->step = 16ULL << 20;
	o->seed = 1;
	o->charge_metadata = 1;
	for (i = 1; i < argc; i++) {
		char name[64];
		const char *arg = argv[i], *val, *eq = strchr(arg, '=');

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strncmp(arg, "--", 2) != 0 ||
		    (size_t)(eq ? eq - arg : (long)strlen(arg)) >= sizeof (name))
			return bad_usage("unexpected argument '%s'", arg);
		snprintf(name, sizeof (name), "%.*s",
		    (int)(eq ? eq - arg : (long)strlen(arg)), arg);
		if (takes_value(name) < 0)
			return bad_usage("unknown option '%s'", name);
		if (takes_value(name) == 0) {
			if (eq != NULL)
				return bad_usage("%s takes no value", name);
			if (strcmp(name, "--no-metadata") == 0)
				o->charge_metadata = 0;
			else if (strcmp(name, "--json") == 0)
				o->json = 1;
			else
				o->quiet = 1;
			continue;
		}
		if (eq != NULL)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			return bad_usage("%s needs a value", name);
		if ((rc = apply_option(o, name, val, &wl_set)) != 0)
			return rc;
	}
	if (!wl_set && o->trace_path != NULL)
		o->workloads |= KVSIM_W_REPLAY;
	if ((o->workloads & KVSIM_W_REPLAY) && o->trace_path == NULL)
		return bad_usage("%s", "the replay workload needs --trace FILE");
	return 0;
}

static void
progress(void *arg, const char *line)
{
	(void) arg;
	fprintf(stderr, "\r%-70s", line);
	fflush(stderr);
}

/* Compute the layout of each placement asked for; 0 or an exit status. */
static int
compute_layouts(const options_t *o, layout_t *out, size_t *n)
{
	layout_params_t p = o->params;
	int i, count = o->both ? 2 : 1;

	*n = 0;
	for (i = 0; i < count; i++) {
		if (o->both)
			p.placement = i == 0 ? LAYOUT_SEGKP_FIXED :
			    LAYOUT_SEGKP_FROMHEAP;
		if (layout_compute(&p, &out[*n]) == VMEM_E_LAYOUT_BADARG) {
			fprintf(stderr, "kvsim: %s\n", out[*n].error);
			return EXIT_USAGE;
		}
		(*n)++;
	}
	return 0;
}

static int
load_inputs(const options_t *o, kvsim_mix_t *mix, kvsim_trace_t *trace)
{
	char err[256];

	memset(trace, 0, sizeof (*trace));
	if (o->mix_path == NULL)
		kvsim_mix_default(mix);
	else if (kvsim_mix_load(o->mix_path, mix, err, sizeof (err)) != 0) {
		fprintf(stderr, "kvsim: mix %s\n", err);
		return EXIT_USAGE;
	}
	if ((o->workloads & KVSIM_W_REPLAY) &&
	    kvsim_trace_load(o->trace_path, trace, err, sizeof (err)) != 0) {
		fprintf(stderr, "kvsim: trace %s\n", err);
		return EXIT_USAGE;
	}
	return 0;
}

static int
write_svg(const options_t *o, const kvsim_run_t *runs, size_t n)
{
	size_t points = 0;
	FILE *f;
	int rc;

	if (o->svg_path == NULL)
		return 0;
	for (size_t i = 0; i < n; i++)
		points += runs[i].nfrontier;
	/* Checked before opening: a failed run leaves no empty file. */
	if (points == 0) {
		fprintf(stderr, "kvsim: %s: no frontier points to draw (run "
		    "--workload frontier)\n", o->svg_path);
		return EXIT_RUNFAIL;
	}
	if ((f = fopen(o->svg_path, "w")) == NULL) {
		fprintf(stderr, "kvsim: %s: %s\n", o->svg_path, strerror(errno));
		return EXIT_RUNFAIL;
	}
	rc = kvsim_report_svg(f, runs, n);
	if (fclose(f) != 0 || rc != 0) {
		fprintf(stderr, "kvsim: %s: write error\n", o->svg_path);
		return EXIT_RUNFAIL;
	}
	return 0;
}

/* Run the workloads of every placement; fills runs[]. */
static int
run_all(const options_t *o, const kvsim_engine_t *engine,
    const kvsim_mix_t *mix, const kvsim_trace_t *trace,
    const layout_t *layouts, kvsim_run_t *runs, size_t n)
{
	kvsim_drive_opts_t d;
	size_t i;
	int rc = 0;

	memset(&d, 0, sizeof (d));
	d.engine = engine;
	d.charge_metadata = o->charge_metadata;
	d.mix = mix;
	d.seed = o->seed;
	d.step = o->step;
	d.trace = trace;
	d.workloads = o->workloads;
	d.progress = o->quiet ? NULL : progress;
	for (i = 0; i < n; i++) {
		if (layouts[i].error_code != 0)
			continue;       /* refused: reported, nothing to run */
		if (kvsim_drive(&d, &layouts[i], &runs[i]) != 0)
			rc = EXIT_RUNFAIL;
		if (!o->quiet)
			fprintf(stderr, "\r%-70s\r", "");
	}
	return rc;
}

int
main(int argc, char **argv)
{
	options_t o;
	layout_t layouts[2];
	kvsim_run_t runs[2];
	kvsim_mix_t mix;
	kvsim_trace_t trace;
	kvsim_report_config_t rc_cfg;
	const kvsim_engine_t *engine = kvsim_engine_get();
	size_t n, i;
	int rc, refused = 0;

	if ((rc = parse_args(argc, argv, &o)) != 0 ||
	    (rc = compute_layouts(&o, layouts, &n)) != 0 ||
	    (rc = load_inputs(&o, &mix, &trace)) != 0)
		return rc;
	memset(runs, 0, sizeof (runs));
	for (i = 0; i < n; i++) {
		runs[i].layout = layouts[i];
		refused += layouts[i].error_code != 0;
		if (!o.json && !o.quiet)
			layout_print(&layouts[i], stdout);
		else if (!o.json && layouts[i].error_code != 0)
			fprintf(stderr, "kvsim: panic: %s\n", layouts[i].error);
		if (layouts[i].error_code != 0)
			snprintf(runs[i].error, sizeof (runs[i].error), "%s",
			    layouts[i].error);
	}
	/* A refused placement fails the run, but the other one still runs,
	 * so the comparison shows what the refused one would have cost. */
	rc = refused ? EXIT_RUNFAIL : 0;
	if (o.workloads != 0 && engine == NULL) {
		fprintf(stderr, "kvsim: workload engine not built yet\n");
		rc = EXIT_RUNFAIL;
	} else if (o.workloads != 0 && refused < (int)n) {
		int run_rc = run_all(&o, engine, &mix, &trace, layouts, runs,
		    n);

		if (run_rc != 0)
			rc = run_rc;
		if (!o.json)
			kvsim_report_table(stdout, runs, n);
	}
	if (rc == 0)
		rc = write_svg(&o, runs, n);
	if (o.json) {
		memset(&rc_cfg, 0, sizeof (rc_cfg));
		rc_cfg.charge_metadata = o.charge_metadata;
		rc_cfg.step = o.step;
		rc_cfg.seed = o.seed;
		rc_cfg.mix_source = mix.source;
		rc_cfg.trace_path = o.trace_path;
		rc_cfg.workloads = o.workloads;
		rc_cfg.engine_present = engine != NULL;
		kvsim_report_json(stdout, &rc_cfg, runs, n);
	}
	for (i = 0; i < n; i++)
		kvsim_run_free(&runs[i]);
	kvsim_trace_free(&trace);
	return rc;
}
