"""Lake maintenance in the background of the worker, and the table figures /metrics shows.

It runs in a thread of its own with its own catalog connection, so a long compaction never holds
up a commit; its commits and the pipeline's do not conflict (lake/maintenance.py says why).
A failed run is logged and counted, and the next one tries again: maintenance is never a reason
for the worker to stop.
"""

from __future__ import annotations

import asyncio
import logging

from sensorlake.config import Config
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.maintenance import Maintenance, TableReport
from sensorlake.lake.tables import load_table, table_totals
from sensorlake.metrics import WriterMetrics

log = logging.getLogger(__name__)

FIRST_RUN_S = 5.0
"""The first run waits this long, so a start is not slowed down by it."""


async def keep_lake(config: Config, metrics: WriterMetrics) -> None:
    maintenance: Maintenance | None = None
    await asyncio.sleep(min(FIRST_RUN_S, config.lake.maintenance_interval))
    while True:
        try:
            if maintenance is None:
                maintenance = Maintenance.from_config(
                    config, await asyncio.to_thread(open_catalog, config))
            if config.lake.maintenance:
                reports = await asyncio.to_thread(maintenance.run)
                metrics.maintenance_runs.labels("ok").inc()
                for report in reports:
                    _count(report, metrics)
            await asyncio.to_thread(table_figures, maintenance, metrics)
        except Exception as exc:  # the catalog or store is away: the next run tries again
            metrics.maintenance_runs.labels("failed").inc()
            log.warning("lake maintenance failed (it runs again in %.0f s): %s",
                        config.lake.maintenance_interval, exc)
        await asyncio.sleep(config.lake.maintenance_interval)


def _count(report: TableReport, metrics: WriterMetrics) -> None:
    metrics.compacted_files.labels(report.table).inc(report.compacted_files)
    metrics.removed_files.labels(report.table).inc(report.removed_orphans)
    if not report.skipped:
        metrics.maintenance_last.labels(report.table).set(report.started_at + report.seconds)
    if report.changed:
        log.info("maintenance: %s", report.summary())


def table_figures(maintenance: Maintenance, metrics: WriterMetrics) -> None:
    for name in maintenance.tables():
        table = load_table(maintenance.catalog, maintenance.namespace, name)
        totals = table_totals(table)
        metrics.table_files.labels(name).set(totals.files)
        metrics.table_bytes.labels(name).set(totals.bytes)
        metrics.table_snapshots.labels(name).set(totals.snapshots)
        metrics.table_metadata_bytes.labels(name).set(totals.metadata_bytes)
