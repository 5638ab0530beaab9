/*
 * kvsim output: the per-placement table, JSON (schema in docs/KVSIM.md)
 * and the SVG frontier chart.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef KVSIM_REPORT_H
#define KVSIM_REPORT_H

#include <stdio.h>

#include "drive.h"

/* What was asked, echoed into the JSON. */
typedef struct kvsim_report_config {
	int charge_metadata;
	uint64_t step;
	uint64_t seed;
	const char *mix_source;
	const char *trace_path;     /* NULL if none */
	unsigned workloads;         /* KVSIM_W_* asked for */
	int engine_present;
} kvsim_report_config_t;

/* The table: one row per placement run. */
void kvsim_report_table(FILE *f, const kvsim_run_t *runs, size_t n);
/* One JSON document (version 1). */
void kvsim_report_json(FILE *f, const kvsim_report_config_t *cfg,
    const kvsim_run_t *runs, size_t n);
/* The frontier chart; -1 if no run has frontier points. */
int kvsim_report_svg(FILE *f, const kvsim_run_t *runs, size_t n);

#endif
