"""The Ray engine of `autolabel run --engine ray`: the local engine's pipeline spread over a Ray
cluster with Ray Data.

    driver: discover + resume filter (labelling.pending_images)
      -> CPU tasks:  labelling.detect_and_crop (decode, detect, cut crops), per image
      -> actor pool: labelling.predict_jobs (Predictor on a runtime, model loaded once per actor)
      -> driver: the same Writer and Summary as the local engine

Nothing here decodes, detects, crops, predicts or builds rows itself: the stages call the local
engine's functions, and the results come back to the driver as `ImageResult`s, which the run's
`formats.Writer` turns into rows exactly as in a local run (same schema, metadata, resume keys,
atomic output). Images travel as paths, so every node must see the same files at the same paths
(a shared filesystem); a node that cannot read one writes an error row naming itself.

Between stages an image is one pickled `DetectJob` / `ImageResult` in a binary column, so the
blocks always have the same explicit schema (no null-typed columns when a batch has no errors).
A stage catches exceptions per image: one bad image is an error row, never a lost batch.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import pyarrow as pa
import ray
from tqdm import tqdm

from autolabel.detectors import make_detector
from autolabel.formats import Writer
from autolabel.images import count_non_images
from autolabel.labelling import DetectJob, Summary, detect_and_crop, listed_images, pending_images, predict_jobs
from autolabel.predictor import Predictor, make_predictor
from autolabel.types import AutolabelError, ImageResult, UsageError

_DETECT_SCHEMA = pa.schema([pa.field("i", pa.int64()), pa.field("job", pa.binary())])
_RESULT_SCHEMA = pa.schema([pa.field("i", pa.int64()), pa.field("result", pa.binary())])


@dataclass(frozen=True)
class RaySettings:
    """How a run uses the cluster. CPUs left None are one per task and per actor on a cluster of
    4 CPUs or more, and a quarter of the cluster's on a smaller one: an actor holding a whole CPU
    of a 1- or 2-CPU cluster would leave the detection tasks none, and the run would hang."""

    address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: a running cluster
    detect_cpus: float | None = None  # CPUs reserved per decode + detect + crop task
    actor_cpus: float | None = None  # CPUs reserved per inference actor (its torch threads: at least 1)
    actors: tuple[int, int] | None = None  # inference pool (min, max); None: 1 .. one per 8 cluster CPUs
    detect_batch: int = 8  # images per detection task
    infer_batch: int = 32  # images per inference call
    chunk_images: int = 50_000  # images per Ray Data execution: bounds the driver's memory
    flush_seconds: float = 10.0  # the driver makes results durable at least this often


def node_name() -> str:
    """This process's machine, as error rows name it."""
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a name for a message; never fail over it
        ip = "?"
    return f"{socket.gethostname()} ({ip})"


# --------------------------------------------------------------------------- the stages
_DETECTORS: dict = {}


def detect_batch(batch: pa.Table, detector_name: str, detector_kw: dict, size: int) -> pa.Table:
    """Ray task: `detect_and_crop` for each path of the batch -> pickled DetectJobs."""
    key = (detector_name, tuple(sorted(detector_kw.items())))
    if key not in _DETECTORS:  # Ray reuses worker processes: make each detector once per process
        _DETECTORS[key] = make_detector(detector_name, **detector_kw)
    det = _DETECTORS[key]
    blobs = []
    for p in batch.column("path").to_pylist():
        try:
            job = detect_and_crop(Path(p), det, size)
        except Exception as e:  # noqa: BLE001 - one image's failure must not drop the batch
            job = DetectJob(Path(p), error=f"unexpected {type(e).__name__}: {e}")
        if job.error is not None:
            job = replace(job, error=f"{job.error} (on node {node_name()})")
        blobs.append(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
    return pa.table([batch.column("i"), pa.array(blobs, pa.binary())], schema=_DETECT_SCHEMA)


class PredictActor:
    """Ray actor: loads the model once, then `predict_jobs` on batches of DetectJobs.

    A node whose model differs from the driver's (another autolabel version or model file)
    or cannot load it answers with error rows naming the node, instead of mixing versions."""

    def __init__(self, runtime: str, model: str | None, flip: bool, threads: int, model_id: str, refine: bool = False):
        self.predictor: Predictor | None = None
        self.refusal: str | None = None
        try:
            pred = make_predictor(runtime, Path(model) if model else None, flip=flip, threads=threads, refine=refine)
        except AutolabelError as e:
            self.refusal = f"cannot load the model on node {node_name()}: {e}"
            return
        if pred.model_id != model_id:
            self.refusal = (f"node {node_name()} has model {pred.model_id}, the driver {model_id}: "
                            "install the same autolabel and model file on every node")
        else:
            self.predictor = pred

    def __call__(self, batch: pa.Table) -> pa.Table:
        jobs: list[DetectJob] = [pickle.loads(b) for b in batch.column("job").to_pylist()]
        if self.predictor is None:
            results = [ImageResult(j.path, error=self.refusal) for j in jobs]
        else:  # errors found here (--refine reads each image again) name this node too
            results = [replace(r, error=f"{r.error} (on node {node_name()})") if r.error and r.error != j.error else r
                       for r, j in zip(predict_jobs(self.predictor, jobs), jobs)]
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results]
        return pa.table([batch.column("i"), pa.array(blobs, pa.binary())], schema=_RESULT_SCHEMA)


# --------------------------------------------------------------------------- the driver
class RayJobError(AutolabelError):
    """The Ray job failed as a whole (a lost node, a timeout); finished results are saved."""


def _connect(address: str | None) -> bool:
    """Join (or start) Ray quietly; True if this call started the connection."""
    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False} if address is None else {}
    if not os.environ.get("AUTOLABEL_DEBUG"):
        # Ray's C++ core logs a harmless error line per inference actor (its constructor
        # arguments live in the object store); real failures still arrive as exceptions.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot connect to Ray at {address or 'a new local instance'}: {e}") from None
    return True


def _quiet_data_context() -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar of its own
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # it would warn, once per process, that the progress bars switched off above are off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _resolve(settings: RaySettings) -> RaySettings:
    """`settings` with the CPUs and the actor pool sized for the cluster."""
    cpus = ray.cluster_resources().get("CPU", 1.0)
    share = min(1.0, cpus / 4)
    return replace(settings, detect_cpus=settings.detect_cpus or share, actor_cpus=settings.actor_cpus or share,
                   actors=settings.actors or (1, max(1, int(cpus // 8))))


def _execute(chunk: list[str], settings: RaySettings, detect_kw: dict, actor_kw: dict) -> Iterator[tuple[int, ImageResult]]:
    """Run one chunk of paths through the cluster; yield (index in chunk, result) as they come."""
    ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(chunk)],
                             override_num_blocks=max(1, -(-len(chunk) // settings.detect_batch)))
    # max_calls recycles a detection process now and then (decoders' heap growth on huge photos);
    # it also keeps Ray Data from fusing this stage into the actors, which it does when two
    # stages' remote options are equal: detection must stay on the many CPU tasks.
    ds = ds.map_batches(detect_batch, batch_size=settings.detect_batch, batch_format="pyarrow",
                        num_cpus=settings.detect_cpus, fn_kwargs=detect_kw, max_calls=1000)
    lo, hi = settings.actors
    ds = ds.map_batches(PredictActor, batch_size=settings.infer_batch, batch_format="pyarrow", num_cpus=settings.actor_cpus,
                        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi), fn_constructor_kwargs=actor_kw)
    batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:  # whatever Ray raised, the run stops the same way
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RayJobError(f"the Ray job failed ({type(e).__name__}: {msg[:300]}); finished batches are saved, "
                              "rerun the same command to resume") from e
        for i, blob in zip(batch.column("i").to_pylist(), batch.column("result").to_pylist()):
            yield i, pickle.loads(blob)


def label_paths_ray(
    inputs: list[Path],
    writer: Writer,
    predictor: Predictor,
    runtime: str = "torch",
    model: Path | None = None,
    flip: bool = True,
    detector_name: str = "hog",
    detector_kw: dict | None = None,
    globs: list[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    settings: RaySettings = RaySettings(),
) -> Summary:
    """`labelling.label_paths` on a Ray cluster: the same inputs, results, resume and summary.

    `predictor` is the driver's (its model version, crop size and `refine`); each actor loads
    `runtime` / `model` / `flip` itself and must find the same model version.
    """
    t0 = time.time()
    s = Summary(non_images=count_non_images(inputs))
    done = writer.done_keys() if resume else {}
    started = _connect(settings.address)
    try:
        _quiet_data_context()
        settings = _resolve(settings)
        detect_kw = {"detector_name": detector_name, "detector_kw": detector_kw or {}, "size": predictor.size}
        actor_kw = {"runtime": runtime, "model": str(Path(model).absolute()) if model else None, "flip": flip,
                    "threads": max(1, int(settings.actor_cpus)), "model_id": predictor.model_id, "refine": predictor.refine}
        todo = pending_images(inputs, globs, done, s)
        total = sum(not is_done for *_, is_done in listed_images(inputs, globs, done)) if progress else None
        bar = tqdm(total=total, desc="labelling", unit="img", disable=not progress, dynamic_ncols=True)
        last_flush = time.time()
        try:
            while chunk := list(islice(todo, settings.chunk_images)):
                for i, r in _execute([str(p) for p, _, _ in chunk], settings, detect_kw, actor_kw):
                    _, rel, stat = chunk[i]
                    writer.write_result(r, rel, stat)
                    s.add(r)
                    bar.update(1)
                    bar.set_postfix(faces=s.faces, errors=s.errors, refresh=False)
                    if time.time() - last_flush >= settings.flush_seconds:
                        writer.flush()
                        last_flush = time.time()
        finally:
            writer.flush()  # results already received are complete: keep them whatever happened
            bar.close()
    finally:
        s.seconds = time.time() - t0
        if started:
            ray.shutdown()
    return s
