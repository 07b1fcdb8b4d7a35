"""Keeping the lake small and fast for months: compaction, retention, snapshot expiry, orphans.

Every commit of the pipeline adds a data file, a manifest and a snapshot; left alone, planning a
query reads every manifest and opens every file, and every commit rewrites metadata that lists
every snapshot. Maintenance keeps each of those bounded:

- **compaction** rewrites the small files of a partition, about `lake.target_file_mb` of them at
  a time, into one file sorted like the table and delta-encoded where that pays
  (`lake/parquet.py`), in one overwrite commit (which also drops the manifests that listed only
  those files);
- **retention** deletes whole day partitions older than `lake.retention_days` of the table;
- **expiry** drops snapshots older than `lake.keep_snapshots_hours` from the metadata;
- **orphan removal** deletes files under the table that no retained snapshot or metadata version
  references, once older than `lake.orphan_grace`.

None of it moves the stream position: that is a table property, carried unchanged by every
commit here. Compaction and retention commit with snapshot isolation, so a concurrent append of
the pipeline never conflicts with them; pyiceberg retries either side on a lost race after
re-validating that the files being replaced still exist.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, LessThan
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.update.snapshot import ExpireSnapshots
from pyiceberg.transforms import DayTransform

from sensorlake.config import Config, LakeConfig
from sensorlake.lake.parquet import write_data_file
from sensorlake.lake.tables import (
    COMMITS,
    POSITION_PROPERTY,
    TABLE_PROPERTIES,
    count_rewrite,
    load_table,
    read_position,
    table_totals,
)
from sensorlake.lake.transaction import transaction

log = logging.getLogger(__name__)

MiB = 1024 * 1024
SMALL_FRACTION = 0.75
"""A file under this share of the target size counts as small."""
TARGET_FILE_SIZE = "write.target-file-size-bytes"
"""What pyiceberg bin-packs a large append into (set from lake.target_file_mb); compaction
sizes its own files by the inputs it groups (`_chunks`)."""
COMMIT_ATTEMPTS = 3
REPORT_FILE = "maintenance.json"


@dataclass
class TableReport:
    """What one maintenance run did to one table (or, with dry_run, would do)."""

    table: str
    dry_run: bool = False
    files_before: int = 0
    files_after: int = 0
    compacted_files: int = 0
    """Small files rewritten."""
    written_files: int = 0
    """Files they became."""
    compacted_partitions: list[str] = field(default_factory=list)
    deleted_partitions: list[str] = field(default_factory=list)
    deleted_rows: int = 0
    expired_snapshots: int = 0
    snapshots_after: int = 0
    removed_orphans: int = 0
    removed_bytes: int = 0
    skipped: str = ""
    """Why the table was left alone, when it was."""
    started_at: float = 0.0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.compacted_files or self.deleted_partitions or self.expired_snapshots
                    or self.removed_orphans)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.table}: skipped ({self.skipped})"
        verb = "would " if self.dry_run else ""
        parts = []
        if self.compacted_files:
            parts.append(f"{verb}compact {self.compacted_files} files into {self.written_files} "
                         f"({len(self.compacted_partitions)} partitions)")
        if self.deleted_partitions:
            parts.append(f"{verb}delete {len(self.deleted_partitions)} partitions past retention")
        if self.expired_snapshots:
            parts.append(f"{verb}expire {self.expired_snapshots} snapshots")
        if self.removed_orphans:
            parts.append(f"{verb}remove {self.removed_orphans} unreferenced files "
                         f"({self.removed_bytes / MiB:.1f} MiB)")
        done = "; ".join(parts) if parts else "nothing to do"
        return f"{self.table}: {done} — {self.files_after} files, {self.seconds:.2f} s"


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class Maintenance:
    def __init__(
        self,
        catalog: Catalog,
        namespace: str,
        settings: LakeConfig,
        *,
        report_dir: Path | None = None,
        progress: Progress = _quiet,
        now: Callable[[], float] = time.time,
        min_snapshot_age: float = 60.0,
    ) -> None:
        self._catalog = catalog
        self._namespace = namespace
        self._settings = settings
        self._report_dir = report_dir
        self._progress = progress
        self._now = now
        self._min_snapshot_age = min_snapshot_age

    @classmethod
    def from_config(cls, config: Config, catalog: Catalog, *, progress: Progress = _quiet
                    ) -> Maintenance:
        return cls(catalog, config.lake.namespace, config.lake, report_dir=config.data_dir,
                   progress=progress, min_snapshot_age=max(10.0, 2 * config.query.timeout))

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def namespace(self) -> str:
        return self._namespace

    def tables(self) -> list[str]:
        return sorted(ident[-1] for ident in self._catalog.list_tables(self._namespace))

    def run(self, names: Sequence[str] | None = None, *, dry_run: bool = False
            ) -> list[TableReport]:
        reports = [self.run_table(name, dry_run=dry_run) for name in (names or self.tables())]
        if not dry_run and self._report_dir is not None:
            record_reports(self._report_dir, reports)
        return reports

    def run_table(self, name: str, *, dry_run: bool = False) -> TableReport:
        report = TableReport(name, dry_run=dry_run, started_at=self._now())
        started = time.monotonic()
        table = load_table(self._catalog, self._namespace, name)
        report.files_before = table_totals(table).files
        if POSITION_PROPERTY not in table.properties and read_position(table).seqs:
            # Written by an earlier version, whose position lives in snapshot summaries: the
            # pipeline's next commit records it as a property. Until then, expiring or
            # replacing snapshots could lose it.
            report.skipped = "waiting for the pipeline's first commit to record its position"
            report.files_after = report.files_before
            return report
        if not dry_run:
            table = self._ensure_properties(table)
        self._progress(f"{name}: retention")
        table = self._retention(table, report)
        self._progress(f"{name}: compaction")
        table = self._compact(table, report)
        self._progress(f"{name}: snapshot expiry")
        table = self._expire(table, report)
        self._progress(f"{name}: unreferenced files")
        self._remove_orphans(table, report)
        report.files_after = table_totals(table).files
        report.snapshots_after = len(table.metadata.snapshots)
        report.seconds = time.monotonic() - started
        return report

    # -- properties ----------------------------------------------------------------------------

    def _ensure_properties(self, table: Table) -> Table:
        missing = {k: v for k, v in TABLE_PROPERTIES.items() if k not in table.properties}
        target = str(self._settings.target_file_mb * MiB)
        if table.properties.get(TARGET_FILE_SIZE) != target:
            missing[TARGET_FILE_SIZE] = target
        if not missing:
            return table
        return self._commit(table, lambda t: transaction(t).set_properties(missing))

    def _commit(self, table: Table, build: Callable[[Table], Any]) -> Table:
        """Build a transaction on the table as it is now and commit it, again on a lost race
        (another process may commit too: `sensorlake maintain` beside a running worker)."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                with COMMITS:
                    table = self._reload(table)
                    result: Table = build(table).commit_transaction()
                    count_rewrite()
                return result
            except CommitFailedException:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def _reload(self, table: Table) -> Table:
        return self._catalog.load_table(table.name())

    # -- retention -----------------------------------------------------------------------------

    def _retention(self, table: Table, report: TableReport) -> Table:
        days = self._settings.retention_days.get(report.table)
        if not days:
            return table
        column = _day_column(table)
        if column is None:
            log.warning("lake.retention_days.%s is set, but %s is not partitioned by day: "
                        "nothing is deleted", report.table, report.table)
            return table
        today = datetime.fromtimestamp(self._now(), UTC).date()
        cutoff = datetime.combine(today - timedelta(days=days), datetime.min.time(), UTC)
        past = LessThan(term=column, value=cutoff.isoformat())
        old = [task.file for task in table.scan(row_filter=past).plan_files()]
        if not old:
            return table
        report.deleted_partitions = sorted({_partition_name(table, f) for f in old})
        report.deleted_rows = sum(f.record_count for f in old)
        if report.dry_run:
            return table

        def build(t: Table) -> Any:
            tx = transaction(t)
            tx.delete(past, snapshot_properties={"sensorlake.operation": "retention"})
            return tx

        return self._commit(table, build)

    # -- compaction ----------------------------------------------------------------------------

    def _compact(self, table: Table, report: TableReport) -> Table:
        target = self._settings.target_file_mb * MiB
        today = (datetime.fromtimestamp(self._now(), UTC).date() - datetime(1970, 1, 1).date()).days
        day_index = _day_index(table)
        groups: dict[tuple[int, tuple[Any, ...]], list[DataFile]] = {}
        for task in table.scan().plan_files():
            data = task.file
            if data.file_size_in_bytes < target * SMALL_FRACTION:
                key = (data.spec_id, tuple(data.partition[i] for i in range(len(data.partition))))
                groups.setdefault(key, []).append(data)
        for (_, partition), small in sorted(groups.items(), key=lambda kv: str(kv[0])):
            closed = (day_index is not None and partition[day_index] is not None
                      and int(partition[day_index]) < today)
            if not (len(small) > self._settings.compact_min_files
                    or (closed and len(small) >= 2)):
                continue
            for chunk in _chunks(sorted(small, key=lambda f: f.file_path), target):
                if len(chunk) < 2:
                    continue
                name = _partition_name(table, chunk[0])
                self._progress(f"{report.table}: compacting {len(chunk)} files of {name}")
                if report.dry_run:
                    written = 1
                else:
                    table, written = self._rewrite(table, chunk)
                report.compacted_files += len(chunk)
                report.written_files += written
                if name not in report.compacted_partitions:
                    report.compacted_partitions.append(name)
        return table

    def _rewrite(self, table: Table, files: list[DataFile]) -> tuple[Table, int]:
        """Replace `files` (of one partition, about a target's worth) by the same rows, sorted,
        in one file: one commit."""
        rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(
            [FileScanTask(f) for f in files])
        sort_by = _sort_keys(table, rows.schema)
        if sort_by and rows.num_rows > 1:
            rows = rows.sort_by(sort_by)
        written = [write_data_file(table, rows, files[0].spec_id, files[0].partition)]

        def build(t: Table) -> Any:
            tx = transaction(t)
            props = {"sensorlake.operation": "compaction"}
            with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                for old in files:
                    overwrite.delete_data_file(old)
                for new in written:
                    overwrite.append_data_file(new)
            return tx

        return self._commit(table, build), len(written)

    # -- snapshot expiry -----------------------------------------------------------------------

    def _expire(self, table: Table, report: TableReport) -> Table:
        expired = self._expirable(table)
        report.expired_snapshots = len(expired)
        if not expired or report.dry_run:
            return table

        def build(t: Table) -> Any:
            tx = transaction(t)
            ids = self._expirable(t)  # t is the table as it is now
            report.expired_snapshots = len(ids)
            ExpireSnapshots(tx).by_ids(ids).commit()  # staged; committed by _commit
            return tx

        return self._commit(table, build)

    def _expirable(self, table: Table) -> list[int]:
        """Snapshots older than keep_snapshots_hours, or past the newest max_snapshots — but
        only those that stopped being current more than min_snapshot_age ago: a query may still
        be reading the files of the snapshot it planned on (each runs at most query.timeout).

        Every commit copies the whole metadata several times over inside pyiceberg, so its cost
        grows with the snapshots kept; the count cap is what keeps a fast-committing table's
        commits as cheap on day 300 as on day 1."""
        now_ms = self._now() * 1000
        keep_from = now_ms - self._settings.keep_snapshots_hours * 3_600_000
        settled = now_ms - self._min_snapshot_age * 1000
        current = table.current_snapshot()
        log = table.metadata.snapshot_log
        superseded = {entry.snapshot_id: later.timestamp_ms
                      for entry, later in itertools.pairwise(log)}
        newest_first = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms,
                              reverse=True)
        expired = []
        for rank, snapshot in enumerate(newest_first):
            if current is not None and snapshot.snapshot_id == current.snapshot_id:
                continue
            old = (snapshot.timestamp_ms < keep_from
                   or rank >= self._settings.max_snapshots)
            if old and superseded.get(snapshot.snapshot_id, snapshot.timestamp_ms) < settled:
                expired.append(snapshot.snapshot_id)
        return expired

    # -- unreferenced files --------------------------------------------------------------------

    def _remove_orphans(self, table: Table, report: TableReport) -> None:
        fs, root = _filesystem(table.location())
        referenced = {_path_of(p) for p in referenced_files(table)}
        cutoff = self._now() - self._settings.orphan_grace
        orphans: list[tuple[str, int]] = []
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
            if info.type != pafs.FileType.File or info.path in referenced:
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else self._now()
            if mtime < cutoff:
                orphans.append((info.path, info.size or 0))
        report.removed_orphans = len(orphans)
        report.removed_bytes = sum(size for _, size in orphans)
        if report.dry_run:
            return
        for path, _ in orphans:
            fs.delete_file(path)


def referenced_files(table: Table) -> set[str]:
    """Every file a retained snapshot or kept metadata version of `table` points at. Each
    manifest is read once, however many snapshots share it."""
    metadata = table.metadata
    paths: set[str] = {table.metadata_location}
    paths.update(entry.metadata_file for entry in metadata.metadata_log)
    paths.update(s.statistics_path for s in metadata.statistics)
    manifests: dict[str, Any] = {}
    for snapshot in metadata.snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            manifests.setdefault(manifest.manifest_path, manifest)
    for path, manifest in manifests.items():
        paths.add(path)
        # A deleted entry names a file its snapshot removed: live only in the parent, which
        # lists it itself if it is retained.
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            paths.add(entry.data_file.file_path)
    return paths


def _chunks(files: Iterable[DataFile], target: int) -> Iterable[list[DataFile]]:
    """Runs of files whose sizes add up to about one target file each."""
    chunk: list[DataFile] = []
    size = 0
    for data in files:
        chunk.append(data)
        size += data.file_size_in_bytes
        if size >= target:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _day_index(table: Table) -> int | None:
    for index, spec_field in enumerate(table.spec().fields):
        if isinstance(spec_field.transform, DayTransform):
            return index
    return None


def _day_column(table: Table) -> str | None:
    index = _day_index(table)
    if index is None:
        return None
    source = table.spec().fields[index].source_id
    return table.schema().find_column_name(source)


def _partition_name(table: Table, data: DataFile) -> str:
    spec = table.specs()[data.spec_id]
    parts = []
    for index, spec_field in enumerate(spec.fields):
        value = data.partition[index]
        if isinstance(spec_field.transform, DayTransform) and value is not None:
            value = (datetime(1970, 1, 1).date() + timedelta(days=int(value))).isoformat()
        parts.append(f"{spec_field.name}={value}")
    return "/".join(parts) or "(unpartitioned)"


def _sort_keys(table: Table, schema: pa.Schema) -> list[tuple[str, str]]:
    """The table's sort order as Arrow sort keys (pyiceberg does not sort on write)."""
    keys = []
    for sort_field in table.sort_order().fields:
        name = table.schema().find_column_name(sort_field.source_id)
        if name and name in schema.names:
            keys.append((name, "ascending" if sort_field.direction.value == "asc"
                         else "descending"))
    return keys


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if urlparse(location).scheme in ("", "file"):
        return pafs.LocalFileSystem(), _path_of(location)
    fs, root = pafs.FileSystem.from_uri(location)
    return fs, root


def _path_of(location: str) -> str:
    """A file's location as pyarrow's filesystem lists it: the URI's path exactly as pyiceberg
    wrote the file there (it does not percent-decode `file:` URIs, so neither may this)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else location
    return f"{parsed.netloc}{parsed.path}"


def record_reports(directory: Path, reports: Sequence[TableReport]) -> None:
    """Keep each table's last run where `describe` and `/metrics` can read it."""
    path = directory / REPORT_FILE
    try:
        known: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    for report in reports:
        known[report.table] = asdict(report)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(path)


def last_reports(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        known: dict[str, dict[str, Any]] = json.loads((directory / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return known
