/*
 * kvsim output writers: text table, JSON document, SVG frontier chart.
 *
 * Problem: the same results serve a person (table), a program (JSON, with
 * a schema in docs/KVSIM.md that stays stable: fields are only added) and a
 * picture (the two frontiers, threads against heap in use).
 *
 * Conventions: sizes are JSON integers in bytes (all below 2^53);
 * addresses are strings "0x..." because amd64 addresses exceed 2^53; a
 * workload that did not run is null. The SVG is self-contained, fixed size,
 * with axes scaled to "nice" tick steps.
 *
 * Stateless; no locks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report.h"

#define MIB (1024.0 * 1024.0)

static double
mib(uint64_t b)
{
	return (double)b / MIB;
}

void
kvsim_report_table(FILE *f, const kvsim_run_t *runs, size_t n)
{
	size_t i;

	fprintf(f, "%-9s %12s %11s %13s %14s %9s\n", "placement",
	    "heap_arena", "max threads", "max heap", "unused at fail",
	    "run time");
	for (i = 0; i < n; i++) {
		const kvsim_run_t *r = &runs[i];
		char thr[32] = "-", heap[32] = "-", unused[32] = "-";

		if (r->done & KVSIM_W_STORM) {
			snprintf(thr, sizeof (thr), "%llu",
			    (unsigned long long)r->storm.threads);
			snprintf(unused, sizeof (unused), "%.1f MiB",
			    mib(r->storm.unused));
		}
		if (r->done & KVSIM_W_HEAP)
			snprintf(heap, sizeof (heap), "%.1f MiB",
			    mib(r->heap.heap_use));
		fprintf(f, "%-9s %8.1f MiB %11s %13s %14s %7.3f s\n",
		    layout_placement_name(r->layout.params.placement),
		    mib(r->layout.heap_size), thr, heap, unused, r->seconds);
		if (r->error[0] != '\0')
			fprintf(f, "          error: %s\n", r->error);
		if ((r->done & KVSIM_W_REPLAY) && r->replay.fail_line != 0)
			fprintf(f, "          replay: %zu events applied, then "
			    "line %u (%s) failed\n", r->replay.applied,
			    r->replay.fail_line, kvsim_op_name(
			    (kvsim_op_t)r->replay.fail_op));
		else if (r->done & KVSIM_W_REPLAY)
			fprintf(f, "          replay: all %zu events applied\n",
			    r->replay.applied);
	}
}

static void
json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void
json_addr(FILE *f, const char *name, uint64_t a, int last)
{
	fprintf(f, "\"%s\": \"0x%llx\"%s", name, (unsigned long long)a,
	    last ? "" : ", ");
}

static void
json_stats(FILE *f, const kvsim_sim_stats_t *st)
{
	fprintf(f, "{\"heap_total\": %llu, \"heap_inuse\": %llu, "
	    "\"heap_largest_free\": %llu, \"segkp_total\": %llu, "
	    "\"segkp_inuse\": %llu, \"kmem_bytes\": %llu, "
	    "\"metadata_bytes\": %llu, \"threads\": %llu}",
	    (unsigned long long)st->heap_total,
	    (unsigned long long)st->heap_inuse,
	    (unsigned long long)st->heap_largest_free,
	    (unsigned long long)st->segkp_total,
	    (unsigned long long)st->segkp_inuse,
	    (unsigned long long)st->kmem_bytes,
	    (unsigned long long)st->metadata_bytes,
	    (unsigned long long)st->threads);
}

static void
json_layout(FILE *f, const layout_t *l)
{
	int i;

	fprintf(f, "{\"arch\": \"%s\", \"rules\": %d, \"placement\": \"%s\", "
	    "\"pae\": %s, \"physmem\": %llu, \"lpage\": %llu, "
	    "\"stack_pages\": %u, \"stack_va\": %llu, \"page_t_size\": %u, "
	    "\"valloc_sz\": %llu,\n      ",
	    layout_arch_name(l->params.arch), (int)l->params.rules,
	    layout_placement_name(l->params.placement),
	    l->pae ? "true" : "false", (unsigned long long)l->physmem,
	    (unsigned long long)l->lpage, l->stack_pages,
	    (unsigned long long)l->stack_va, l->params.page_t_size,
	    (unsigned long long)l->valloc_sz);
	json_addr(f, "userlimit", l->userlimit, 0);
	json_addr(f, "kernelbase", l->kernelbase, 0);
	json_addr(f, "segmap_start", l->segmap_start, 0);
	fprintf(f, "\"segmapsize\": %llu,\n      ",
	    (unsigned long long)l->segmapsize);
	json_addr(f, "kernelheap", l->kernelheap, 0);
	json_addr(f, "ekernelheap", l->ekernelheap, 0);
	json_addr(f, "heaptext", l->heaptext_start, 0);
	json_addr(f, "ptable_va", l->ptable_va, 0);
	json_addr(f, "valloc_base", l->valloc_base, 0);
	json_addr(f, "kernel_text", l->kernel_text, 0);
	fprintf(f, "\n      ");
	json_addr(f, "segkp_base", l->segkp_base, 0);
	fprintf(f, "\"segkp_size\": %llu, ", (unsigned long long)l->segkp_size);
	json_addr(f, "heap_base", l->heap_base, 0);
	fprintf(f, "\"heap_size\": %llu, \"kernel_heap_column\": %llu,\n      ",
	    (unsigned long long)l->heap_size,
	    (unsigned long long)l->kernel_heap_column);
	fprintf(f, "\"warnings\": [");
	for (i = 0; i < l->nwarnings; i++) {
		if (i > 0)
			fprintf(f, ", ");
		json_string(f, l->warnings[i]);
	}
	fprintf(f, "], \"error\": ");
	if (l->error_code != 0)
		json_string(f, l->error);
	else
		fprintf(f, "null");
	fprintf(f, "}");
}

static void
json_workloads(FILE *f, const kvsim_run_t *r)
{
	size_t i;

	fprintf(f, ",\n     \"at_boot\": ");
	json_stats(f, &r->at_boot);
	fprintf(f, ",\n     \"storm\": ");
	if (r->done & KVSIM_W_STORM) {
		fprintf(f, "{\"threads\": %llu, \"unused\": %llu, "
		    "\"seconds\": %.6f, \"at_fail\": ",
		    (unsigned long long)r->storm.threads,
		    (unsigned long long)r->storm.unused, r->storm.seconds);
		json_stats(f, &r->storm.at_fail);
		fprintf(f, "}");
	} else {
		fprintf(f, "null");
	}
	fprintf(f, ",\n     \"heap\": ");
	if (r->done & KVSIM_W_HEAP) {
		fprintf(f, "{\"allocs\": %llu, \"heap_use\": %llu, "
		    "\"unused\": %llu, \"fail_size\": %llu, \"seconds\": %.6f, "
		    "\"at_fail\": ", (unsigned long long)r->heap.allocs,
		    (unsigned long long)r->heap.heap_use,
		    (unsigned long long)r->heap.unused,
		    (unsigned long long)r->heap.fail_size, r->heap.seconds);
		json_stats(f, &r->heap.at_fail);
		fprintf(f, "}");
	} else {
		fprintf(f, "null");
	}
	fprintf(f, ",\n     \"frontier\": ");
	if (r->done & KVSIM_W_FRONTIER) {
		fprintf(f, "{\"seconds\": %.6f, \"points\": [",
		    r->frontier_seconds);
		for (i = 0; i < r->nfrontier; i++)
			fprintf(f, "%s[%llu, %llu]", i ? ", " : "",
			    (unsigned long long)r->frontier[i].heap_use,
			    (unsigned long long)r->frontier[i].threads);
		fprintf(f, "]}");
	} else {
		fprintf(f, "null");
	}
	fprintf(f, ",\n     \"replay\": ");
	if (r->done & KVSIM_W_REPLAY) {
		fprintf(f, "{\"applied\": %zu, \"fail_line\": %u, "
		    "\"fail_op\": ", r->replay.applied, r->replay.fail_line);
		if (r->replay.fail_line != 0)
			json_string(f, kvsim_op_name(
			    (kvsim_op_t)r->replay.fail_op));
		else
			fprintf(f, "null");
		fprintf(f, ", \"seconds\": %.6f, \"at_end\": ",
		    r->replay.seconds);
		json_stats(f, &r->replay.at_end);
		fprintf(f, "}");
	} else {
		fprintf(f, "null");
	}
}

void
kvsim_report_json(FILE *f, const kvsim_report_config_t *cfg,
    const kvsim_run_t *runs, size_t n)
{
	static const char *const names[] = { "storm", "heap", "frontier",
	    "replay" };
	size_t i;
	int w, first = 1;

	fprintf(f, "{\"kvsim\": 1,\n \"config\": {\"metadata\": %s, "
	    "\"step\": %llu, \"seed\": %llu, \"engine\": %s, \"mix\": ",
	    cfg->charge_metadata ? "true" : "false",
	    (unsigned long long)cfg->step, (unsigned long long)cfg->seed,
	    cfg->engine_present ? "true" : "false");
	json_string(f, cfg->mix_source);
	fprintf(f, ", \"trace\": ");
	if (cfg->trace_path != NULL)
		json_string(f, cfg->trace_path);
	else
		fprintf(f, "null");
	fprintf(f, ", \"workloads\": [");
	for (w = 0; w < 4; w++) {
		if (cfg->workloads & (1u << w)) {
			fprintf(f, "%s\"%s\"", first ? "" : ", ", names[w]);
			first = 0;
		}
	}
	fprintf(f, "]},\n \"runs\": [");
	for (i = 0; i < n; i++) {
		fprintf(f, "%s\n    {\"placement\": \"%s\", \"error\": ",
		    i ? "," : "", layout_placement_name(
		    runs[i].layout.params.placement));
		if (runs[i].error[0] != '\0')
			json_string(f, runs[i].error);
		else
			fprintf(f, "null");
		fprintf(f, ", \"seconds\": %.6f,\n     \"layout\": ",
		    runs[i].seconds);
		json_layout(f, &runs[i].layout);
		json_workloads(f, &runs[i]);
		fprintf(f, "}");
	}
	fprintf(f, "\n ]\n}\n");
}

/* A tick step of 1, 2 or 5 x 10^k giving about 5 ticks up to max. */
static double
nice_step(double max)
{
	double raw = max / 5, p = pow(10, floor(log10(raw))), m = raw / p;

	if (max <= 0)
		return 1;
	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

int
kvsim_report_svg(FILE *f, const kvsim_run_t *runs, size_t n)
{
	static const char *const colors[] = { "#c0392b", "#2471a3", "#1e8449",
	    "#7d3c98" };
	const double W = 760, H = 460, L = 80, R = 30, T = 50, B = 60;
	double xmax = 0, ymax = 0, xs, ys, v;
	size_t i, k, have = 0;

	for (i = 0; i < n; i++)
		for (k = 0; k < runs[i].nfrontier; k++, have++) {
			if (mib(runs[i].frontier[k].heap_use) > xmax)
				xmax = mib(runs[i].frontier[k].heap_use);
			if ((double)runs[i].frontier[k].threads > ymax)
				ymax = (double)runs[i].frontier[k].threads;
		}
	if (have == 0)
		return -1;
	xs = nice_step(xmax);
	ys = nice_step(ymax);
	xmax = ceil(xmax / xs) * xs;
	ymax = ceil(ymax / ys) * ys;
	if (xmax <= 0)
		xmax = xs;
	if (ymax <= 0)
		ymax = ys;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
	    "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
	    W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"15\" "
	    "text-anchor=\"middle\">Threads that still fit against kernel heap "
	    "in use (%s, %llu MiB memory)</text>\n", W / 2,
	    layout_arch_name(runs[0].layout.params.arch),
	    (unsigned long long)(runs[0].layout.physmem >> 20));
	for (v = 0; v <= xmax + xs / 2; v += xs) {
		double x = L + v / xmax * (W - L - R);

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" "
		    "y2=\"%.0f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.0f\" "
		    "text-anchor=\"middle\">%g</text>\n", x, T, x, H - B, x,
		    H - B + 18, v);
	}
	for (v = 0; v <= ymax + ys / 2; v += ys) {
		double y = H - B - v / ymax * (H - T - B);

		fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" "
		    "y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.0f\" y=\"%.1f\" "
		    "text-anchor=\"end\">%g</text>\n", L, y, W - R, y, L - 6,
		    y + 4, v);
	}
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">heap "
	    "in use beyond boot (MiB)</text>\n", (L + W - R) / 2, H - 20);
	fprintf(f, "<text x=\"18\" y=\"%.0f\" text-anchor=\"middle\" "
	    "transform=\"rotate(-90 18 %.0f)\">threads</text>\n",
	    (T + H - B) / 2, (T + H - B) / 2);
	for (i = 0; i < n; i++) {
		const char *c = colors[i % 4];

		if (runs[i].nfrontier == 0)
			continue;
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" "
		    "stroke-width=\"2\" points=\"", c);
		for (k = 0; k < runs[i].nfrontier; k++)
			fprintf(f, "%s%.1f,%.1f", k ? " " : "",
			    L + mib(runs[i].frontier[k].heap_use) / xmax *
			    (W - L - R), H - B -
			    (double)runs[i].frontier[k].threads / ymax *
			    (H - T - B));
		fprintf(f, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s"
		    "</text>\n", W - R - 120, T + 16 + 16 * (double)i, c,
		    layout_placement_name(runs[i].layout.params.placement));
	}
	fprintf(f, "</svg>\n");
	return 0;
}
