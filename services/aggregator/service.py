"""What happens to a manifest and to a scored result: store, count once, finish the job.

A manifest registers its job and how many records to expect. A result is validated
against the core's record type, stored under (job, idx) and, when new, added to the job's
running aggregates; a redelivered result finds its key taken and changes nothing. When
the last expected record arrives, the records' Parquet file and the paper's result JSON
are written (from the stored records, a batch at a time, counted by the core's
`Aggregate`) and a `completed` event is published. The HTTP API serves status and results.

A store that cannot write (a full disk) is reported as the `store` problem: the aggregator
takes no new work, each result in hand waits, and the store is reopened until it writes;
then the results are stored and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
from aiohttp import web

from proto import AnswerSource, InvalidMessage, JobEvent, JobManifest, ScoredResult, decode, encode
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..core.records import ResultRecord, record_from_dict
from ..core.results import Aggregate, ExperimentSpec, summary
from ..core.tasks import kind_spec
from ..provenance import MAX_JOB_SOURCES, merge_sources
from ..provenance import build as build_provenance
from ..result_files import BATCH, PLACING, RecordsFile, beside_token, place_result, write_result_json
from ..runtime.access import bearer_token_required
from ..runtime.handlers import Outgoing, Publisher, Reject
from ..runtime.lock import FolderLock
from ..runtime.service import ServiceBase, import_in_background
from ..runtime.storage import WriteRecovery, is_store_error
from ..wire import record_of
from . import metrics
from .store import ResultStore

log = logging.getLogger("introspect")
T = TypeVar("T")
FINISH_RETRY_FIRST, FINISH_RETRY_MAX = 1.0, 30.0  # seconds between attempts to finish a job: doubling


@dataclass(slots=True)
class JobState:
    manifest: JobManifest
    running: Aggregate
    received: int = 0
    complete: bool = False
    result_file: str | None = None
    records_file: str | None = None
    final_results: dict[str, Any] | None = None  # kept when complete: no records to rescan at start
    # Provenance: the distinct sources of the job's answers (stored as they grow), whether
    # there were more than are listed, when its last record was in, and why its files were
    # written beside the experiment's name, if they were.
    sources: list[AnswerSource] = field(default_factory=list)
    more_sources: bool = False
    ended_at: float | None = None
    result_note: str | None = None
    # One finish at a time: redelivered last records arrive together, and each would
    # otherwise write the result files again.
    finishing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def job_id(self) -> str:
        return self.manifest.job.job_id

    def status(self) -> dict[str, Any]:
        results = self.running.results() if self.final_results is None else self.final_results
        return {
            "job_id": self.job_id,
            "experiment_id": self.manifest.experiment_id,
            "expected": self.manifest.expected,
            "received": self.received,
            "complete": self.complete,
            "results": results,
            "summary": {name: p.value for name, p in summary(results).items()},
            "result_file": self.result_file,
            "records_file": self.records_file,
            "result_note": self.result_note,
        }


class Aggregator(ServiceBase):
    name = "aggregator"
    accepts = (JobManifest, ScoredResult)

    def __init__(self, data_dir: Path, results_dir: Path | None = None, api_token: str | None = None) -> None:
        self.store_dir = data_dir / "aggregator"
        self.api_token = api_token  # the API asks for it as a bearer token; None: open
        self.results_dir = results_dir or data_dir / "results"
        self.store: ResultStore | None = None
        self.jobs: dict[str, JobState] = {}
        self.bus: Publisher | None = None  # where a finish retried in the background publishes
        self._retrying: dict[str, asyncio.Task[None]] = {}
        self.lock: FolderLock | None = None
        self.recovery: WriteRecovery | None = None

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("aggregator")

    async def start(self, bus: Publisher) -> None:
        self.bus = bus
        import_in_background("pandas", "pyarrow.parquet")  # the result files are written with them
        # RocksDB locks the folder too, but says only "Resource temporarily unavailable".
        self.lock = FolderLock.beside(self.store_dir, f"the aggregator's store {self.store_dir}")
        self.lock.acquire()
        self.store = ResultStore(self.store_dir)
        self.recovery = WriteRecovery(self.store, self.health, "store", blocks_work=True)
        for job_id, raw in self.store.manifests():
            try:
                manifest = decode(raw, JobManifest)
                _check_manifest(manifest)
            except (InvalidMessage, ValueError) as error:  # stored by an older version, or damaged
                metrics.UNREADABLE.inc()
                log.warning("aggregator: skipping the stored manifest of job %s: %s", job_id, error)
                continue
            state = self._register(manifest)
            completion = self.store.completion(job_id)
            if completion is not None:  # finished: its counts were kept, its records stay on disk
                state.complete, state.received = True, completion["received"]
                state.result_file, state.records_file = completion["result_file"], completion["records_file"]
                state.result_note = completion.get("result_note")
                state.final_results = results = completion["results"]
                metrics.JOB_PROGRESS.labels(job_id, "received").set(state.received)
                metrics.JOB_COMPLETE.labels(job_id).set(1)
                metrics.JOB_CORRECT.labels(job_id).set(results["correct"])
                both = results.get("faithful_and_correct", results.get("introspect_and_correct", 0))
                metrics.JOB_FAITHFUL.labels(job_id).set(both)
                continue
            try:
                state.sources = self.store.sources(job_id)
            except ValueError as error:  # damaged: the provenance says less, the job goes on
                log.warning("aggregator: job %s: %s", job_id, error)
            for batch in self._record_batches(state):  # a batch at a time: memory flat in the job's size
                for record in batch:
                    self._count(state, record)
            if state.received >= state.manifest.expected:
                await bus.publish(await self._finish_or_retry(state))  # died between the last record and the files

    async def close(self) -> None:
        for task in list(self._retrying.values()):
            task.cancel()
        if self.recovery is not None:
            self.recovery.close()
        if self.store is not None:
            self.store.close()
        if self.lock is not None:
            self.lock.release()

    async def handle(self, message: JobManifest | ScoredResult) -> list[Outgoing]:
        if isinstance(message, JobManifest):
            return await self._on_manifest(message)
        return await self._on_result(message)

    async def _on_manifest(self, manifest: JobManifest) -> list[Outgoing]:
        assert self.store is not None
        job_id = manifest.job.job_id
        if job_id in self.jobs:  # a redelivered manifest
            return _completed(self.jobs[job_id])
        try:
            _check_manifest(manifest)  # before it is stored: what is stored must never fail later
        except ValueError as error:
            raise Reject(f"job {job_id}: bad manifest: {error}", "bad-manifest") from None
        store = self.store
        await self._stored(lambda: store.put_manifest(job_id, encode(manifest)))
        state = self._register(manifest)
        if manifest.expected == 0:
            return await self._finish_or_retry(state)
        return []

    async def _on_result(self, result: ScoredResult) -> list[Outgoing]:
        assert self.store is not None
        state = self.jobs.get(result.job_id)
        if state is None:
            raise Reject(f"result for unknown job {result.job_id!r}", "unknown-job")
        try:
            record = record_of(result)
        except (KeyError, TypeError, ValueError) as error:
            raise Reject(f"job {result.job_id}, observation {result.idx}: bad record: {error}", "bad-record") from None
        if record.idx != result.idx or result.task != state.running.task_kind:
            raise Reject(
                f"job {result.job_id}: result {result.task}/{result.idx} does not match its record", "bad-record"
            )
        store = self.store
        await self._note_sources(state, result.sources)  # before the record: a redelivery finds them stored
        if not await self._stored(lambda: store.add_record(result.job_id, result.idx, result.record)):
            metrics.DUPLICATES.inc()
            if state.received >= state.manifest.expected and not state.complete:
                return await self._finish_or_retry(state)
            return _completed(state)
        self._count(state, record)
        metrics.RECORDS.labels(result.task).inc()
        if state.received == state.manifest.expected and not state.complete:
            return await self._finish_or_retry(state)
        return []

    async def _stored(self, write: Callable[[], T]) -> T:
        """What `write()` returns, once the store has taken it. If it cannot (a full disk),
        the aggregator reports it and takes no new work, and this message waits for the
        reopened store, then writes again: nothing is acknowledged before it is stored."""
        assert self.recovery is not None
        while True:
            await self.recovery.until_recovered()
            try:
                return write()
            except Exception as error:
                if not is_store_error(error):
                    raise
                self.recovery.failed(error)

    async def _note_sources(self, state: JobState, sources: list[AnswerSource]) -> None:
        """Keep (and store) each source of the job's answers not seen before, up to
        MAX_JOB_SOURCES; the store is written only when one is new: a handful per job."""
        if all(source in state.sources for source in sources):
            return
        merged = merge_sources(state.sources, sources, MAX_JOB_SOURCES)
        state.more_sources = state.more_sources or any(source not in merged for source in sources)
        if merged != state.sources:
            assert self.store is not None
            store = self.store
            await self._stored(lambda: store.put_sources(state.job_id, merged))
            state.sources = merged

    def _register(self, manifest: JobManifest) -> JobState:
        state = JobState(manifest, Aggregate(manifest.job.task))
        self.jobs[manifest.job.job_id] = state
        metrics.JOB_PROGRESS.labels(state.job_id, "expected").set(manifest.expected)
        metrics.JOB_COMPLETE.labels(state.job_id).set(0)
        return state

    def _count(self, state: JobState, record: ResultRecord) -> None:
        state.received += 1
        state.running.add(record)
        metrics.JOB_PROGRESS.labels(state.job_id, "received").set(state.received)
        metrics.JOB_CORRECT.labels(state.job_id).set(state.running.correct)
        metrics.JOB_FAITHFUL.labels(state.job_id).set(state.running.both)

    def _record_batches(self, state: JobState) -> Iterator[list[ResultRecord]]:
        """The job's stored records, a batch at a time; one that does not read (stored by an
        older version, or damaged) is skipped and reported, never the end of the aggregator."""
        assert self.store is not None
        kind = kind_spec(state.running.task_kind).record
        for stored in self.store.record_batches(state.job_id, BATCH):
            batch = []
            for key, raw in stored:
                try:
                    batch.append(record_from_dict(kind, msgpack.unpackb(raw)))
                except Exception as error:  # msgpack's format errors, the record's own checks
                    metrics.UNREADABLE.inc()
                    log.warning("aggregator: dropping an unreadable stored record of job %s: %s", state.job_id, error)
                    with contextlib.suppress(Exception):  # a store that cannot write drops it next time
                        self.store.forget(key)
            yield batch

    async def _finish_or_retry(self, state: JobState) -> list[Outgoing]:
        """Finish the job; if writing its files fails (a full disk), keep its records, say
        so, and try again in the background until it succeeds: a job whose records are all
        in always completes."""
        try:
            async with state.finishing:
                if state.complete:  # finished meanwhile, by the call this one waited for
                    return _completed(state)
                return await self._finish(state)
        except Exception as error:  # a full disk: OSError from the files, RocksDB's own errors
            log.warning("aggregator: could not finish job %s (%s); trying again", state.job_id, error)
            metrics.FINISH_FAILURES.inc()
            if state.job_id not in self._retrying:
                self._retrying[state.job_id] = asyncio.create_task(self._retry_finish(state))
            return []

    async def _retry_finish(self, state: JobState) -> None:
        delay = FINISH_RETRY_FIRST
        try:
            while not state.complete:
                await asyncio.sleep(delay)
                delay = min(delay * 2, FINISH_RETRY_MAX)
                try:
                    async with state.finishing:
                        if state.complete:
                            break
                        events = await self._finish(state)
                except Exception as error:
                    metrics.FINISH_FAILURES.inc()
                    log.warning("aggregator: job %s still cannot finish (%s)", state.job_id, error)
                    continue
                if self.bus is not None:
                    await self.bus.publish(events)
        finally:
            self._retrying.pop(state.job_id, None)

    async def _finish(self, state: JobState) -> list[Outgoing]:
        """Write the result files, remember the job complete; the `completed` event to publish.

        The records are read from the store and written to Parquet a batch at a time, and
        the aggregates counted from the same records as they pass: the file and its numbers
        always agree, and a job of a million records is finished in bounded memory."""
        assert self.store is not None
        spec = ExperimentSpec.from_args(state.manifest.experiment)
        final = Aggregate(state.running.task_kind)
        state.ended_at = state.ended_at or time.time()  # the last record was in: a retry keeps the time
        provenance = self._provenance(state)
        kind = kind_spec(final.task_kind).record
        parquet = await asyncio.to_thread(RecordsFile, self.results_dir, spec, kind, provenance)
        try:
            for batch in self._record_batches(state):
                for record in batch:
                    final.add(record)
                await asyncio.to_thread(parquet.write, batch)  # the store is read here, on the loop, alone

            def put_in_place() -> tuple[str | None, Path, Path]:
                # A result of other provenance under the experiment's name is never replaced,
                # and a job is never lost: its files go beside it, named by the job.
                with PLACING:
                    beside = beside_token(state.job_id, spec.experiment_id)
                    placement = place_result(self.results_dir, spec, provenance, beside=beside)
                    setup = state.manifest.setup_seconds
                    result = write_result_json(self.results_dir, spec, final, setup, provenance, path=placement.result)
                    return placement.note, result, parquet.finish(placement.records)

            note, result_path, records_path = await asyncio.to_thread(put_in_place)
        except BaseException:
            await asyncio.to_thread(parquet.abandon)
            raise
        state.result_file, state.records_file, state.result_note = str(result_path), str(records_path), note
        log.info("job %s: complete, %d records; results in %s", state.job_id, final.total, result_path)
        if note is not None:
            log.warning("job %s: %s", state.job_id, note)
        state.final_results = final.results()
        completion = {
            "result_file": state.result_file,
            "records_file": state.records_file,
            "result_note": state.result_note,
            "received": final.total,
            "results": state.final_results,
        }
        store = self.store
        await self._stored(lambda: store.mark_complete(state.job_id, completion))
        state.complete = True
        metrics.JOBS_COMPLETED.inc()
        metrics.JOB_COMPLETE.labels(state.job_id).set(1)
        return _completed(state)

    def _provenance(self, state: JobState) -> dict[str, Any]:
        """The job's provenance: its chat settings and selection from the manifest, where its
        answers came from as the gateways said, written by this aggregator."""
        manifest = state.manifest
        return build_provenance(
            job=manifest.job,
            chat=manifest.chat,
            sources=state.sources,
            more_sources=state.more_sources,
            started_at=manifest.started_at or None,
            finished_at=state.ended_at or time.time(),
            written_by="introspect aggregator",
        )

    # -- HTTP API --

    def routes(self) -> list[web.RouteDef]:
        """The API: jobs, their status and their files, behind the bearer token when one is
        set (records hold rows of the data a job read). /metrics and /healthz stay open for
        the probes and Prometheus."""
        from ..report.routes import report_routes  # the report page, behind the same token

        guarded = bearer_token_required(self.api_token)
        return [
            web.get("/jobs", guarded(self._list)),
            web.get("/jobs/{job_id}", guarded(self._status)),
            web.get("/jobs/{job_id}/result.json", guarded(self._result_file)),
            web.get("/jobs/{job_id}/records.parquet", guarded(self._records_file)),
            *report_routes(self.results_dir, lambda: [state.status() for state in self.jobs.values()], self.api_token),
        ]

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response([state.status() for state in self.jobs.values()])

    def _job(self, request: web.Request) -> JobState:
        job_id = request.match_info["job_id"]
        if job_id not in self.jobs:
            raise web.HTTPNotFound(text=f"no job {job_id!r}\n")
        return self.jobs[job_id]

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._job(request).status())

    async def _result_file(self, request: web.Request) -> web.StreamResponse:
        return _file_response(self._job(request).result_file)

    async def _records_file(self, request: web.Request) -> web.StreamResponse:
        return _file_response(self._job(request).records_file)


def _check_manifest(manifest: JobManifest) -> None:
    """ValueError unless the manifest can run to its result files: a known task kind, a
    count, and an experiment whose id is a file name and matches the one it carries."""
    kind_spec(manifest.job.task)
    if manifest.expected < 0:
        raise ValueError(f"expected must be 0 or more, got {manifest.expected}")
    spec = ExperimentSpec.from_args(manifest.experiment)
    if spec.experiment_id != manifest.experiment_id:
        raise ValueError(f"experiment_id {manifest.experiment_id!r} is not its experiment's {spec.experiment_id!r}")


def _completed(state: JobState) -> list[Outgoing]:
    """A complete job's `completed` event; nothing for a job still running.

    Sent again whenever a redelivered message of a complete job arrives: if publishing it
    failed after the job was marked complete, the redelivery that failure causes sends it
    then (JetStream drops the copies by their id)."""
    if not state.complete:
        return []
    detail = f"{state.received} records; results in {state.result_file}"
    if state.result_note is not None:
        detail += f" ({state.result_note})"
    return [Outgoing(sub.EVENTS, JobEvent(state.job_id, "completed", detail, time.time()), f"{state.job_id}:completed")]


def _file_response(path: str | None) -> web.StreamResponse:
    if path is None:
        raise web.HTTPConflict(text="the job is not complete yet\n")
    return web.FileResponse(Path(path))
