"""Labelling: `run` (`autolabel run`) and `label_paths` label folders of photos (discover ->
decode + detect + crop in worker processes -> batched inference in this process -> streaming
writer; resumable, crash-safe, flat in memory); `Labeler` labels one image in memory (the
library API).

Both cut crops and predict through `predictor` (the one crop-and-predict path). Workers never
import torch: they decode with Pillow, detect with dlib and cut the model's input crops, so only
small (S, S) uint8 crops travel between processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from autolabel import __version__
from autolabel.detectors import DEFAULT_SETTINGS, Detector, make_detector
from autolabel.files import OutputLock, path_text
from autolabel.formats import EXTENSIONS, FOLDER_FORMAT, Writer, guess_format, is_parquet_dataset, make_writer
from autolabel.geometry import CropTransform
from autolabel.images import count_non_images, discover, load_gray, to_8bit
from autolabel.predictor import Predictor, crop_faces, faces_of, make_predictor
from autolabel.types import Box, Face, ImageError, ImageResult, UsageError


@dataclass(frozen=True)
class DetectJob:
    """What a worker returns for one image: boxes and the model crops cut around them."""

    path: Path
    width: int = 0
    height: int = 0
    boxes: tuple[Box, ...] = ()
    crops: np.ndarray | None = None
    transforms: tuple[CropTransform, ...] = ()
    error: str | None = None
    stat: tuple[int, int] | None = None  # (size, mtime_ns) when decoded: `--refine` reads the file again


# --------------------------------------------------------------------------- worker side
_W: dict = {}


def _init_worker(detector_name: str, detector_kw: dict, size: int) -> None:
    _W["det"] = make_detector(detector_name, **detector_kw)
    _W["size"] = size


def _init_pool_worker(*args) -> None:
    # Ctrl-C reaches the whole process group: the main process stops the pool; a worker that
    # took it as well would print its own traceback ("Process SpawnPoolWorker-1: ...").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*args)


def detect_and_crop(path: Path, detector=None, size: int | None = None) -> DetectJob:
    """Decode one image, find its faces and cut their crops. Never raises for a bad image."""
    detector = detector or _W["det"]
    size = size or _W["size"]
    try:
        stat = _file_stat(path)
        gray = load_gray(path)
    except ImageError as e:
        return DetectJob(path, error=str(e))
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop a 100k-image run
        return DetectJob(path, error=f"unexpected {type(e).__name__}: {e}")
    boxes = detector.detect(np.asarray(gray))
    crops, ts = crop_faces(gray, boxes, size)
    return DetectJob(path, gray.width, gray.height, tuple(boxes), crops, tuple(ts), stat=stat)


def _file_stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # load_image says why
    return st.st_size, st.st_mtime_ns


def _work(path: Path) -> DetectJob:
    return detect_and_crop(path)


# --------------------------------------------------------------------------- main side
@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    skipped_done: int = 0
    non_images: int = 0
    seconds: float = 0.0
    error_examples: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: every image was read; 1: some images failed."""
        return 1 if self.errors else 0

    def add(self, r: ImageResult) -> None:
        """Count one image's result."""
        self.images += 1
        self.faces += len(r.faces)
        self.no_face += r.status == "no_face"
        if r.error:
            self.errors += 1
            if len(self.error_examples) < 10:
                self.error_examples.append(f"{r.path}: {r.error}")

    def text(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        lines = [f"{self.images} images ({rate:.1f}/s), {self.faces} faces, {self.no_face} without a face, "
                 f"{self.errors} errors, {self.skipped_done} already labelled (skipped), "
                 f"{self.non_images} non-image files ignored, {self.seconds:.1f} s"]
        lines += [f"  error: {e}" for e in self.error_examples[:10]]
        if self.errors > 10:
            lines.append(f"  ... and {self.errors - 10} more (see the error rows)")
        return "\n".join(lines)


def default_workers() -> int:
    """Worker processes `label_paths` uses unless told: one per CPU core."""
    return os.cpu_count() or 1


def inference_threads(workers: int) -> int | None:
    """Inference threads beside `workers` detecting processes: the cores they leave free (at
    least one), so the two do not oversubscribe the CPU; None (the runtime's default) in-process."""
    return max(1, (os.cpu_count() or 1) - workers) if workers > 0 else None


#: glibc's mallopt parameters: the most malloc arenas, and the size from which a block is mapped
#: on its own (and returned to the system when freed)
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3


def bound_malloc(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Keep a long run's freed memory from piling up in glibc's malloc (Linux; a no-op elsewhere):
    at most `arenas` arenas, and blocks of `mmap_threshold` bytes or more (ONNX Runtime's
    activations without its arena, decoded photos) mapped on their own, so that freeing them
    gives them back.

    With glibc's defaults (8 arenas per core; a threshold that rises to 32 MB once such blocks are
    freed), the pool's result thread unpickles the workers' crops in its own arena, the main thread
    frees them, and large blocks come from heaps that never shrink: `autolabel run` on 10x the
    run-speed set (4,470 images) peaked at 643-775 MB for the process tree (main process 423-556
    MB); with 2 arenas 571-597 (360-383); with both settings 509 (298), for about 0.8 CPU-s more
    of mapping per 447 images (benchmarks/bench_run.py's set). True when set."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    except (OSError, AttributeError):  # not glibc
        return False


def _pool_map(paths: Iterable[Path], workers: int, init_args: tuple) -> Iterator[DetectJob]:
    if workers <= 0:
        _init_worker(*init_args)
        yield from map(_work, paths)
        return
    ctx = mp.get_context("spawn")  # no fork after torch has started its threads
    with ctx.Pool(workers, initializer=_init_pool_worker, initargs=init_args) as pool:
        # imap keeps order and only runs ahead by a bounded amount (flat memory).
        yield from pool.imap(_work, paths, chunksize=1)


def image_root(inputs: list[Path]) -> Path:
    """The folder image names are relative to: the input folder (a file's own folder), or with
    several inputs the deepest folder holding them all, so that each name says which input it
    came from (`cam1/IMG_0001.jpg`, `cam2/IMG_0001.jpg`) and names are unique in every output."""
    dirs = [p if p.is_dir() else p.parent for p in map(_absolute, inputs)]
    return Path(os.path.commonpath(dirs)) if dirs else Path.cwd()


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))  # normalised: no `..`, so names never climb out of the root


def listed_images(inputs: list[Path], globs: list[str] | None,
                  done: dict[str, tuple[int, int]]) -> Iterator[tuple[Path, str, tuple[int, int] | None, bool]]:
    """(file, name, (size, mtime_ns) or None, already labelled) for each image under `inputs`.

    Each file comes once (overlapping inputs, links); what cannot be read (an unlistable folder,
    a link loop, a broken link) comes too, to become an error row. `name` is the image's identity
    in every output: its path relative to `image_root(inputs)`, as text (`files.path_text`).
    Already labelled: in `done` (abs path -> size, mtime) with the same size and mtime.
    """
    roots = [_absolute(p) for p in inputs]
    base = image_root(roots)
    for _root, f in discover(roots, globs, problems=True):
        key = _file_stat(f)
        rel = f.relative_to(base).as_posix()
        yield f, path_text(f.name if rel == "." else rel), key, key is not None and done.get(path_text(f)) == key


def pending_images(inputs: list[Path], globs: list[str] | None, done: dict[str, tuple[int, int]],
                   s: Summary) -> Iterator[tuple[Path, str, tuple[int, int] | None]]:
    """(file, name, (size, mtime_ns) or None) of the images `listed_images` gives that are still
    to label; those already labelled are counted in `s.skipped_done`."""
    for f, rel, key, is_done in listed_images(inputs, globs, done):
        if is_done:
            s.skipped_done += 1
            continue
        yield f, rel, key


def predict_jobs(predictor: Predictor, jobs: list[DetectJob]) -> list[ImageResult]:
    """The crops of `jobs` through `predictor` in one batch: one ImageResult per job, in order.
    Both engines turn detections into results here."""
    crops = [j.crops for j in jobs if j.crops is not None and len(j.crops)]
    ts = [t for j in jobs for t in j.transforms]
    pts, conf, unc = predictor.predict(np.concatenate(crops) if crops else np.zeros((0, 1, 1), np.uint8), ts)
    errors = [j.error for j in jobs]
    if predictor.refine:
        pts, conf, unc, errors = _second_pass(predictor, jobs, pts, conf, unc)
    results, k = [], 0
    for j, error in zip(jobs, errors):
        n = len(j.boxes)
        faces = () if error else tuple(faces_of(j.boxes, pts[k : k + n], conf[k : k + n], unc[k : k + n], predictor.model_id))
        k += n
        results.append(ImageResult(j.path, j.width, j.height, faces, error))
    return results


def _second_pass(predictor: Predictor, jobs: list[DetectJob], pts, conf, unc):
    """`--refine` for the faces of `jobs`: the workers send crops, not images, so each image with
    faces is decoded again, cut (`Predictor.recrop`) and let go, so a batch of big photos is not
    held at once. An image that is no longer the file that was detected becomes an error, not a
    first-pass answer passed off as refined."""
    crops, ts, errors, keep, k = [], [], [], [], 0
    for j in jobs:
        err, n = j.error, len(j.boxes)
        if not err and n:
            try:
                if j.stat is not None and _file_stat(j.path) != j.stat:
                    raise ImageError("the file was modified")
                gray = load_gray(j.path)
                if gray.size != (j.width, j.height):
                    raise ImageError(f"now {gray.width}x{gray.height}, was {j.width}x{j.height}")
                c, t = predictor.recrop(gray, pts[k : k + n])
                crops.append(c)
                ts += t
            except Exception as e:  # noqa: BLE001 - one image's failure must not drop the batch
                err = f"changed or unreadable since detection (--refine reads it again): {e}"
        errors.append(err)
        keep += [err is None] * n
        k += n
    keep = np.asarray(keep, bool)
    if keep.any():
        pts, conf, unc = pts.copy(), conf.copy(), unc.copy()
        again = predictor.predict_again(np.concatenate(crops), ts)
        pts[keep], conf[keep], unc[keep] = predictor.combine((pts[keep], conf[keep], unc[keep]), again)
    return pts, conf, unc, errors


def label_paths(
    inputs: list[Path],
    writer: Writer,
    predictor: Predictor,
    detector_name: str = "hog",
    detector_kw: dict | None = None,
    workers: int | None = None,
    globs: list[str] | None = None,
    batch_faces: int = 32,
    resume: bool = True,
    progress: bool = True,
) -> Summary:
    """Label every image under `inputs`, writing results to `writer` as they come.

    `detector_kw` overrides the detector's DEFAULT_SETTINGS; `workers` (default: one per core,
    0 = in this process) decode, detect and crop. Make the predictor's runtime with
    `threads=inference_threads(workers)` to keep inference off the workers' cores.
    """
    t0 = time.time()
    s = Summary(non_images=count_non_images(inputs))
    done = writer.done_keys() if resume else {}
    if workers is None:
        workers = default_workers()
    bound_malloc()  # before the pool's result thread makes its arena

    names: dict[Path, tuple[str, tuple[int, int] | None]] = {}

    def todo() -> Iterator[Path]:
        for f, rel, key in pending_images(inputs, globs, done, s):
            names[f] = rel, key
            yield f

    pending: list[DetectJob] = []
    n_faces = 0

    def emit() -> None:
        nonlocal n_faces
        for r in predict_jobs(predictor, pending):
            writer.write_result(r, *names.pop(r.path))
            s.add(r)
        writer.flush()  # a finished batch is durable: a kill loses at most the next one
        pending.clear()
        n_faces = 0

    # Listing first costs a directory walk and a stat per file (~1 s per 100k files, next to
    # ~0.1 s of labelling per image) and gives the bar a total and an ETA.
    total = sum(not is_done for *_, is_done in listed_images(inputs, globs, done)) if progress else None
    bar = tqdm(total=total, desc="labelling", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for job in _pool_map(todo(), workers, (detector_name, detector_kw or {}, predictor.size)):
            pending.append(job)
            n_faces += len(job.boxes)
            if n_faces >= batch_faces or len(pending) >= 4 * batch_faces:
                emit()
            bar.update(1)
            bar.set_postfix(faces=s.faces + n_faces, errors=s.errors, refresh=False)
        if pending:
            emit()
    finally:
        bar.close()
        s.seconds = time.time() - t0
    return s


#: `autolabel run --engine`: this machine (worker processes) or a Ray cluster (`labelling_ray`)
ENGINES = ("local", "ray")


def _check_writable(out: Path, is_folder: bool) -> None:
    """Fail before any work if `out` (a file, or a folder when `is_folder`) cannot be written."""
    folder = out if is_folder else out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {folder}: {e.strerror or e}") from None


def run(
    paths: list[Path],
    out: Path,
    fmt: str | None = None,
    model: Path | None = None,
    runtime: str = "auto",
    detector: str = "hog",
    detector_kw: dict | None = None,
    workers: int | None = None,
    globs: list[str] | None = None,
    overwrite: bool = False,
    flip: bool = True,
    refine: bool = True,
    progress: bool = True,
    command: str = "",
    engine: str = "local",
    address: str | None = None,
    ray_settings=None,
) -> Summary:
    """`autolabel run`: label `paths` into `out` (a Parquet file, or a folder for `fmt` "pts";
    `fmt` "parquet" and a folder: a Parquet dataset), resuming unless `overwrite`. Raises
    UsageError before any work for a bad path or output.

    `engine` "ray" labels on a Ray cluster (`labelling_ray.label_paths_ray`; `address` as
    `ray.init` takes it, `ray_settings` a `labelling_ray.RaySettings`); there a folder `out`
    is a Parquet dataset unless `fmt` says otherwise.

    On KeyboardInterrupt the output is left unmerged (finished batches are saved) so that
    rerunning the same call resumes.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "ray":
        try:
            from autolabel import labelling_ray
        except ImportError as e:
            if (e.name or "ray").partition(".")[0] != "ray":
                raise
            raise UsageError("--engine ray needs Ray: pip install 'autolabel[ray]'") from None
        if workers is not None:
            raise UsageError("--workers is for --engine local; Ray sizes its tasks from the cluster")
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    kind = guess_format(out, fmt)
    if engine == "ray" and fmt is None and kind == FOLDER_FORMAT:
        kind = "parquet"  # a folder: a Parquet dataset
    dataset = kind == "parquet" and is_parquet_dataset(out)
    if kind != FOLDER_FORMAT and not dataset and out.is_dir():
        raise UsageError(f"{out} is a folder; give a file name ({', '.join(EXTENSIONS)}) or --format {FOLDER_FORMAT}")
    folder_out = kind == FOLDER_FORMAT or dataset
    _check_writable(out, is_folder=folder_out)
    # one run per output: a second one would mix its part files and rows with ours
    with OutputLock(out / ".autolabel.lock" if folder_out else out.with_name(out.name + ".lock"), str(out)):
        workers = default_workers() if workers is None else workers
        threads = inference_threads(workers) if engine == "local" else 1  # a Ray driver only reads the model's version
        predictor = make_predictor(runtime, model, flip=flip, threads=threads, refine=refine)
        detector_kw = detector_kw or {}
        runtime = predictor.runtime.name  # "auto" resolved: Ray actors make the same one
        meta = {"autolabel_version": __version__, "model_version": predictor.model_id, "model_path": str(model or "shipped"),
                "runtime": runtime, "flip": flip, "refine": refine,
                "detector": _detector_record(detector, detector_kw), "command": command,
                "inputs": [path_text(_absolute(p)) for p in paths], "image_root": path_text(image_root(paths))}
        writer = make_writer(kind, out, metadata=meta, overwrite=overwrite)
        if engine == "ray":
            settings = ray_settings or labelling_ray.RaySettings()
            settings = replace(settings, address=address) if address else settings
            summary = labelling_ray.label_paths_ray(paths, writer, predictor, runtime, model, flip, detector, detector_kw, globs,
                                                    resume=not overwrite, progress=progress, settings=settings)
        else:
            summary = label_paths(paths, writer, predictor, detector, detector_kw, workers, globs, resume=not overwrite,
                                  progress=progress)
        writer.close()
    return summary


def _detector_record(name: str, overrides: dict) -> dict:
    """The detector settings a run records: its overrides, and the rescan rule of "auto"."""
    from autolabel.detectors.dlib_detectors import rescan_rule

    return {"name": name, **overrides, **rescan_rule(overrides.get("upsample", DEFAULT_SETTINGS["upsample"]))}


class Labeler:
    """The library API: the faces in one image file or one PIL image, as `autolabel run` finds them.

        from autolabel import Labeler
        faces = Labeler().label_file("photo.jpg")          # list[Face], the same points as `run`
        faces = Labeler().label(PIL.Image.open("photo.jpg"))

    `model`: a model file, a loaded `LandmarkModel`, or None for the shipped weights; `detector`:
    any Detector (default: dlib HOG with DEFAULT_SETTINGS, as `autolabel run` uses); `runtime`:
    "auto" (the model's int8 ONNX export when there is one, else torch), "onnx", "onnx-fp32" or
    "torch", as `run --runtime` (a loaded `LandmarkModel` always runs on torch); `refine`: two
    stages, as `run` (the default; False = `--no-refine`).
    """

    def __init__(self, model=None, detector: Detector | None = None, flip: bool = True, runtime: str = "auto",
                 refine: bool = True):
        if isinstance(model, (str, Path)) or model is None:
            self.predictor = make_predictor(runtime, Path(model) if model else None, flip=flip, refine=refine)
        else:  # a LandmarkModel already in memory (no second stage beside it: --refine re-crops with it)
            from autolabel.runtimes.torch_runtime import TorchRuntime

            self.predictor = Predictor(TorchRuntime(model, flip=flip), refine=refine)
        self.detector = detector or make_detector("hog")

    def label_file(self, path: str | os.PathLike) -> list[Face]:
        """Faces in an image file, decoded, detected and cropped by the very code `autolabel run`
        uses (EXIF orientation applied), so the points are `run`'s. Raises ImageError when the
        file cannot be read."""
        job = detect_and_crop(Path(path), self.detector, self.predictor.size)
        if job.error is not None:
            raise ImageError(f"{path}: {job.error}")
        (result,) = predict_jobs(self.predictor, [job])
        if result.error is not None:
            raise ImageError(f"{path}: {result.error}")
        return list(result.faces)

    def label(self, image: Image.Image, boxes: list[Box] | None = None) -> list[Face]:
        """Faces in a PIL image. Its EXIF orientation is applied first, as `run` does, so the
        points refer to the upright image (an image already transposed is left as it is).
        `boxes`: skip detection, use these (in upright pixels). `run` and `label_file` decode a
        colour JPEG straight to grey (`images.load_gray`): `label(load_gray(path))` gives their
        points exactly, an RGB decode of the same file grey within rounding and so points that
        may differ by a fraction of a pixel."""
        gray = to_8bit(ImageOps.exif_transpose(image)).convert("L")
        boxes = self.detector.detect(np.asarray(gray)) if boxes is None else list(boxes)
        return self.predictor.faces(gray, boxes)
