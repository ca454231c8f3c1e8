"""Scale out on dask.distributed: one canvas as a coloured wavefront of blocks, or a batch of images.

>>> from napari_diffinfinite.distributed import connect, generate_canvas
>>> with connect(workers=2) as client:            # a LocalCluster; connect("tcp://host:8786"): a cluster
...     run = generate_canvas(client, "embedded", "slide.canvas", size=(8192, 8192), seed=0, block=64)
>>> run.image().shape, run.blocks, run.workers                 # (8192, 8192, 3), 256, ['0', '1']

**One canvas** (:func:`generate_canvas`). The latent canvas is cut into blocks
(:func:`~napari_diffinfinite.sampling.blocks.block_grid`). Block ``(i, j)`` has colour ``i + j`` (its wave):
its sampling context is the blocks of earlier colours within its halo (upper-left, upper and left for a halo
up to the block size), so the blocks of one colour share no context and run in parallel. Every block is two
tasks:

1. *sample* (``diffinfinite-block-*``): submitted as soon as the blocks of its context have latents in the
   store. The worker opens the canvas (a zarr folder every worker reaches), reads the block plus its halo and
   the labels there, runs :func:`~napari_diffinfinite.sampling.blocks.generate_block` with the per-block seed,
   with exactly the context the single-process :func:`~napari_diffinfinite.sampling.blocks.generate_latents`
   gives it (blocks of earlier waves), and writes the block's latents (one chunk: a block is one canvas tile).
2. *decode* (``diffinfinite-decode-*``): submitted once every block whose latents the decode reads has them
   (the decoder's ``decoder_margin`` around the decoded region for a local decoder, a decode tile for the Hann
   decode). The worker decodes with :func:`~napari_diffinfinite.sampling.decode.decode_region` exactly the
   chunks :func:`~napari_diffinfinite.sampling.decode.decode_full` decodes
   (see :meth:`CanvasJob.decode_region`), keeps the block's pixels and writes them to level 0 of the tissue
   pyramid. Decoding on the workers, behind the wavefront, keeps the coordinator light, and pixels land while
   sampling goes on.

The coordinator (the process calling :func:`generate_canvas`) is the canvas's only writer of everything
else: the mask and labels, the per-tile status (1 = latents, 2 = pixels) and the pyramid levels above 0. A
block is submitted only after the status of its context is written, so the store always says which blocks a
running task may rely on.

*Why the coordinator submits tasks instead of chaining futures:* with futures as dependencies, a dependency's
result lives in a worker's memory; when that worker dies, dask recomputes the lost results that pending tasks
still need, i.e. it would generate finished blocks again. Here a finished block lives in the store, so no task
depends on worker memory: a worker that dies loses exactly the task it was running, which dask reschedules on
another worker (up to ``distributed.scheduler.allowed-failures`` times); a task that raises is retried
``retries`` times. Dask still does placement, queuing by priority (sampling before decoding, earlier waves
first: the wavefront is the critical path), retries and the dashboard.

**Resume.** Status is written only after a task's chunks are written, so a re-run with the same canvas folder
and settings skips every block whose status says it is done and redoes only the rest (deterministically, so
the canvas is the same as an uninterrupted run).

**Determinism.** Seeds are per block (``block_seed(seed, i, j)``) and the context of every block is fixed by
the wave structure, not by timing, so the canvas equals single-process
:func:`~napari_diffinfinite.generation.generate` with the same seed, mask and block size: latents bit for bit
when torch uses the same number of threads in both (:class:`ModelPlugin` pins it), pixels likewise.

**A batch** (:func:`generate_batch`): ``count`` independent images (seeds ``seed .. seed + count - 1``),
one task each, every task generating its image with :func:`~napari_diffinfinite.generation.generate` and
writing its own export files ``<stem>_0001.ome.tif`` ...

Each worker loads the model once (:class:`ModelPlugin`, a ``WorkerPlugin``), keeps it on its device and pins
torch's thread count. Install with ``pip install napari-diffinfinite[distributed]``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, WorkerPlugin, as_completed, get_worker

from .label_grid import cell_centres
from .sampling.options import LOOKAHEAD, SamplingOptions

__all__ = [
    "BatchRun",
    "CanvasMismatchError",
    "CanvasRun",
    "ModelPlugin",
    "ModelRef",
    "block_dependencies",
    "connect",
    "generate_batch",
    "generate_canvas",
    "wave_widths",
]

#: Default automatic retries of a task that raises (a worker that dies is handled by the scheduler instead).
RETRIES = 2
#: Grid tile (latents) of the seamless decode; :func:`~napari_diffinfinite.generation.generate` uses 64 too.
DECODE_TILE = 64
#: Blocks per side of the aligned groups whose pyramid the coordinator updates at once (see generate_canvas).
PYRAMID_GROUP = 8
#: Chunk side (px) of the full-resolution mask array stored in the canvas folder.
MASK_CHUNK = 2048
#: The full-resolution class mask (H, W) uint8, next to the canvas arrays.
MASK_ARRAY = "mask"
#: Settings that must match for a re-run to resume an existing canvas.
JOB_KEYS = (
    "model_name",
    "seed",
    "omega",
    "mask_omega",
    "steps",
    "sampler",
    "halo",
    "lookahead",
    "mode",
    "block",
    "image_shape",
    "mask",
    "mask_sha1",
    "context",
    "decode_tile",
    "max_batch",
)

_PRIORITY_SAMPLE = 1 << 30  # sampling tasks (the critical path) before any decode task


class CanvasMismatchError(FileExistsError):
    """The canvas folder holds another job (other settings, mask or model): it cannot be resumed."""


# ---------------------------------------------------------------------------------------------- the model
_MODELS: dict[str, Any] = {}  # this process's loaded models, by plugin name


def _apply_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@dataclass(frozen=True)
class ModelRef:
    """Which model a task needs: the ``load_model`` spec (``"embedded"`` or a folder every worker reaches),
    the device (``None``: the worker's best) and torch's intra-op threads (``None``: left as it is)."""

    spec: str
    device: str | None = None
    threads: int | None = None

    @property
    def name(self) -> str:
        digest = hashlib.sha1(f"{self.spec}|{self.device}|{self.threads}".encode()).hexdigest()[:12]
        return f"diffinfinite-model-{digest}"

    def load(self):
        from .generation import load_model

        _apply_threads(self.threads)
        return load_model(self.spec, device=self.device)

    def get(self):
        """The model in this process: the one :class:`ModelPlugin` loaded, else loaded now and kept."""
        model = _MODELS.get(self.name)
        if model is None:
            model = _MODELS[self.name] = self.load()
        return model


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker (at registration, and on every worker that joins or restarts later),
    keeps it on the worker's device and pins torch's thread count. Tasks find it through :class:`ModelRef`."""

    idempotent = True  # a second registration of the same model on a live cluster keeps the loaded one

    def __init__(self, ref: ModelRef):
        self.ref = ref
        self.name = ref.name

    def setup(self, worker) -> None:
        trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
        if trim is not None and trim.isdigit() and int(trim) < 1 << 24:
            logging.getLogger(__name__).warning(
                "MALLOC_TRIM_THRESHOLD_=%s in this worker slows torch down (every large tensor is mmapped "
                "afresh); start the workers with dask config distributed.nanny.pre-spawn-environ."
                "MALLOC_TRIM_THRESHOLD_: null",
                trim,
            )
        _MODELS[self.name] = self.ref.load()

    def teardown(self, worker) -> None:
        _MODELS.pop(self.name, None)


def _model_ref(model: str | os.PathLike, device, threads) -> ModelRef:
    spec = str(model)
    if spec not in ("embedded", "diffinfinite") and Path(spec).exists():
        spec = str(Path(spec).resolve())  # workers may start in another folder
    return ModelRef(spec, None if device is None else str(device), None if threads is None else int(threads))


def _register(client: Client, ref: ModelRef) -> None:
    """Register the model plugin: every worker loads the model now (errors surface here), and every worker
    that joins or restarts later loads it at start."""
    try:
        client.register_plugin(ModelPlugin(ref), name=ref.name)
    except BaseException:
        with suppress(Exception):  # do not leave a plugin that fails on every worker that joins later
            client.unregister_worker_plugin(ref.name)
        raise


def _result_or_raise(fut, what: str, retries: int):
    """A finished future's result, or its exception with a note naming the task (dask retried it already)."""
    if fut.status != "finished":
        exc = fut.exception()
        exc.add_note(f"diffinfinite: {what} failed (after {retries} retries)")
        raise exc
    return fut.result()


def _worker_name() -> str:
    try:
        return str(get_worker().name)
    except ValueError:  # run outside a worker (tests calling a task directly)
        return f"pid-{os.getpid()}"


def _model_info(ref: ModelRef, context) -> dict:
    """What the coordinator needs to know about the model, read on a worker (it loads no weights itself)."""
    from .generation import CONTEXT_DISPLAY
    from .sampling.decode import MARGIN, decode_strategy

    model = ref.get()
    strategy = decode_strategy(model.autoencoder)
    info = {
        "name": model.name,
        "num_classes": int(model.num_classes),
        "contexts": list(model.contexts),
        "sampling": SamplingOptions.for_model(model),  # the model's sampling defaults
        "default_mask_omega": float(model.default_mask_omega),
        "downsampling": int(model.downsampling),
        "latent_channels": int(model.image_unet.channels),
        "pixel_size_um": float(model.pixel_size_um),
        "has_mask_model": model.mask_unet is not None,
        "decode_strategy": strategy,
        "device": str(model.device),
        "decode_margin": int(model.autoencoder.decoder_margin) if strategy == MARGIN else None,
    }
    if context is not None:
        info["context_display"] = CONTEXT_DISPLAY.get(model.context_id(context), str(context))
    return info


# ---------------------------------------------------------------------------------------------- cluster
@contextmanager
def connect(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    torch_threads: int | None = None,
    dashboard: bool = True,
    quiet: bool = True,
) -> Iterator[Client]:
    """A :class:`distributed.Client`: to the scheduler at ``scheduler`` (an existing cluster), or to a new
    ``LocalCluster`` of ``workers`` worker processes with one task thread each (default: one per GPU, else
    one per 2 CPU cores, at least 1). Closed (with the local cluster) on exit.

    ``torch_threads`` is not applied here: pass it to :func:`generate_canvas` / :func:`generate_batch`, whose
    :class:`ModelPlugin` pins it on each worker.
    """
    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask
    from distributed import LocalCluster

    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    # dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which turns off glibc's dynamic mmap
    # threshold: every large tensor is then mmapped and unmapped afresh, and torch runs ~2.5x slower here
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0" if dashboard else None,
            silence_logs=logging.ERROR if quiet else logging.WARNING,
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def default_workers() -> int:
    """One worker per GPU, else one per 2 CPU cores (at least 1)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return max(1, (os.cpu_count() or 1) // 2)


def dashboard_link(client: Client) -> str | None:
    """The dashboard's address, or None when the cluster serves none (``bokeh`` is needed for it)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):  # no dashboard service
        return None


# ---------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class CanvasJob:
    """Everything a block task needs (small and picklable), and the geometry of its reads."""

    canvas: str
    latent_shape: tuple[int, int, int]  # (C, lh, lw): the latents of the image, not of the padded canvas
    block: int
    seed: int
    options: SamplingOptions  # every sampling setting, as generate() would use them
    decode_tile: int
    decode_margin: int | None  # a local decoder's margin (latents); None: the Hann four-grid decode
    downsampling: int

    @property
    def halo(self) -> int:
        return self.options.halo

    @property
    def grid(self) -> tuple[int, int]:
        _, lh, lw = self.latent_shape
        return -(-lh // self.block), -(-lw // self.block)

    def rect(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Block (i, j)'s latents ``(y0, y1, x0, x1)``."""
        _, lh, lw = self.latent_shape
        b = self.block
        return i * b, min((i + 1) * b, lh), j * b, min((j + 1) * b, lw)

    def _clip(self, y0, y1, x0, x1) -> tuple[int, int, int, int]:
        _, lh, lw = self.latent_shape
        return max(0, y0), min(lh, y1), max(0, x0), min(lw, x1)

    def sample_window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """What sampling block (i, j) reads: the block and its halo."""
        y0, y1, x0, x1 = self.rect(i, j)
        h = self.halo
        return self._clip(y0 - h, y1 + h, x0 - h, x1 + h)

    def decode_region(self, i: int, j: int) -> tuple[int, int, int, int]:
        """What the decode task of block (i, j) decodes. A local decoder decodes whole chunks of the decode
        grid (``decode_tile`` latents) and keeps the block: the very chunks, with the very margins, that
        ``decode_full`` decodes, so the pixels equal it bit for bit (a chunk cut to a smaller block is the
        same maths, but may round differently). The Hann decode decodes the block (its grid is global
        anyway)."""
        y0, y1, x0, x1 = self.rect(i, j)
        if self.decode_margin is None:
            return y0, y1, x0, x1
        t = self.decode_tile
        return self._clip(y0 - y0 % t, -(-y1 // t) * t, x0 - x0 % t, -(-x1 // t) * t)

    def decode_window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Every latent the decode of block (i, j) reads: its region plus the margin (local decoder), or the
        grid tiles around the block (Hann: aligned and half-shifted tiles reach at most a tile out)."""
        y0, y1, x0, x1 = self.decode_region(i, j)
        r = self.decode_tile if self.decode_margin is None else self.decode_margin
        return self._clip(y0 - r, y1 + r, x0 - r, x1 + r)

    def blocks_in(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """The blocks that overlap latent rectangle ``[y0:y1, x0:x1]``."""
        b = self.block
        return [(a, c) for a in range(y0 // b, -(-y1 // b)) for c in range(x0 // b, -(-x1 // b))]


def block_dependencies(job: CanvasJob) -> tuple[dict[tuple[int, int], list], dict[tuple[int, int], list]]:
    """For every block: the blocks whose latents its sampling uses as context (those of earlier waves within
    its halo, as :func:`~napari_diffinfinite.sampling.blocks.context_region` sees them in wave order) and the
    blocks whose latents its decode reads (every block under :meth:`CanvasJob.decode_window`)."""
    rows, cols = job.grid
    context, decode = {}, {}
    for i in range(rows):
        for j in range(cols):
            context[(i, j)] = [(a, c) for a, c in job.blocks_in(*job.sample_window(i, j)) if a + c < i + j]
            decode[(i, j)] = job.blocks_in(*job.decode_window(i, j))
    return context, decode


def wave_widths(rows: int, cols: int) -> list[int]:
    """Blocks per wavefront colour ``c = i + j`` (``c = 0 .. rows + cols - 2``): ``min(c + 1, rows, cols,
    rows + cols - 1 - c)`` - the ramp up, the plateau of ``min(rows, cols)``, the ramp down."""
    return [min(c + 1, rows, cols, rows + cols - 1 - c) for c in range(rows + cols - 1)]


# ---------------------------------------------------------------------------------------------- worker tasks
def _open_worker_store(path: str):
    from .canvas.store import CanvasStore

    return CanvasStore.open(path, "r+", lock=False)  # many writers of disjoint chunks; no status, no pyramid


def _sample_block_task(ref: ModelRef, job: CanvasJob, i: int, j: int, hook=None) -> dict:
    import torch

    from .sampling.blocks import Block, generate_block

    t0 = time.perf_counter()
    if hook is not None:
        hook("block", i, j)
    model = ref.get()
    _c, lh, lw = job.latent_shape
    y0, y1, x0, x1 = job.rect(i, j)
    h = job.halo
    wy0, wy1, wx0, wx1 = max(0, y0 - h), min(lh, y1 + h), max(0, x0 - h), min(lw, x1 + h)
    store = _open_worker_store(job.canvas)
    try:
        latents = torch.from_numpy(np.asarray(store.latents[:, wy0:wy1, wx0:wx1], dtype=np.float32).copy())
        labels = torch.from_numpy(np.asarray(store.labels[0][wy0:wy1, wx0:wx1]).astype(np.int64))
        # context = blocks of earlier waves, exactly as generate_latents marks them done (never by timing)
        rows = torch.arange(wy0, wy1) // job.block
        cols = torch.arange(wx0, wx1) // job.block
        done = (rows[:, None] + cols[None, :]) < (i + j)
        local = Block(i, j, y0 - wy0, x0 - wx0, y1 - wy0, x1 - wx0)
        with torch.no_grad():
            generate_block(
                job.options.stepper(model.image_unet),
                latents,
                done,
                labels,
                local,
                seed=job.seed,
                options=job.options,
                device=model.device,
            )
        out = latents[:, local.y0 : local.y1, local.x0 : local.x1].numpy()
        if not np.isfinite(out).all():
            raise FloatingPointError(f"block ({i}, {j}): latents contain NaN or infinity; not written")
        store.latents[:, y0:y1, x0:x1] = out  # the block is one chunk: written whole, by this task only
    finally:
        store.close()
    return {"kind": "block", "key": (i, j), "worker": _worker_name(), "seconds": time.perf_counter() - t0}


def _decode_block_task(ref: ModelRef, job: CanvasJob, i: int, j: int, hook=None) -> dict:
    import torch

    from .canvas.grid import Rect
    from .sampling.decode import decode_region

    t0 = time.perf_counter()
    if hook is not None:
        hook("decode", i, j)
    model = ref.get()
    y0, y1, x0, x1 = job.rect(i, j)
    ry0, ry1, rx0, rx1 = job.decode_region(i, j)
    wy0, wy1, wx0, wx1 = job.decode_window(i, j)
    store = _open_worker_store(job.canvas)
    try:
        window = torch.from_numpy(np.asarray(store.latents[:, wy0:wy1, wx0:wx1], dtype=np.float32).copy())
        window = window[None].to(model.device)

        def read(ys: slice, xs: slice) -> torch.Tensor:
            if not (ys.start >= wy0 and ys.stop <= wy1 and xs.start >= wx0 and xs.stop <= wx1):
                raise AssertionError(f"decode read {ys}, {xs} outside the window {(wy0, wy1, wx0, wx1)}")
            return window[..., ys.start - wy0 : ys.stop - wy0, xs.start - wx0 : xs.stop - wx0]

        with torch.no_grad():
            px = decode_region(
                model.autoencoder,
                read,
                ry0,
                rx0,
                ry1,
                rx1,
                job.latent_shape,
                tile=job.decode_tile,
                out_device="cpu",
            )[0]
        d = job.downsampling
        px = px[:, (y0 - ry0) * d : (y1 - ry0) * d, (x0 - rx0) * d : (x1 - rx0) * d]
        rgb = (px.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        store.write_tissue(Rect(y0 * d, y1 * d, x0 * d, x1 * d), rgb)  # level 0 of one tile: one chunk
    finally:
        store.close()
    return {"kind": "decode", "key": (i, j), "worker": _worker_name(), "seconds": time.perf_counter() - t0}


def _mask_task(
    ref: ModelRef,
    canvas: str,
    size: tuple[int, int],
    context,
    seed: int,
    steps: int,
    omega: float | None,
    mode: str,
    hook=None,
) -> dict:
    """Generate the class mask as :func:`~napari_diffinfinite.generation.generate` does and store it."""
    from .generation import generate_mask

    t0 = time.perf_counter()
    if hook is not None:
        hook("mask", 0, 0)
    model = ref.get()
    labels = generate_mask(
        model, tuple(size), context=context, seed=seed, steps=steps, omega=omega, mode=mode
    )
    _mask_array(canvas, mode="r+")[...] = labels.astype(np.uint8)
    return {"kind": "mask", "worker": _worker_name(), "seconds": time.perf_counter() - t0}


def _mask_array(canvas, *, mode: str, shape: tuple[int, int] | None = None):
    import zarr

    from .canvas._atomic_store import AtomicLocalStore

    store = AtomicLocalStore(Path(canvas) / MASK_ARRAY, read_only=mode == "r")
    if mode == "w":
        h, w = shape
        return zarr.create_array(
            store=store,
            shape=(h, w),
            chunks=(min(h, MASK_CHUNK), min(w, MASK_CHUNK)),
            dtype="uint8",
            fill_value=0,
            dimension_names=("y", "x"),
            overwrite=True,
        )
    return zarr.open_array(store=store, mode=mode)


# ---------------------------------------------------------------------------------------------- results
@dataclass
class CanvasRun:
    """What :func:`generate_canvas` did. The pixels stay in the canvas store: :meth:`image`,
    :meth:`read_image`."""

    canvas: Path
    shape: tuple[int, int]  # image pixels (H, W)
    grid: tuple[int, int]  # blocks (rows, cols)
    blocks: int  # blocks of the canvas
    sampled: int  # sampling tasks run by this call
    decoded: int  # decode tasks run by this call
    resumed: int  # blocks that were already finished when the call began
    workers: list[str]  # the workers that ran this call's tasks
    seconds: float  # the whole call: model check, mask, wavefront
    wavefront_seconds: float  # from the first block submitted to the last block finished
    settings: dict
    task_seconds: dict = field(default_factory=dict)  # summed task time by kind

    @property
    def blocks_per_second(self) -> float:
        """Blocks sampled and decoded per second of wavefront."""
        return self.sampled / self.wavefront_seconds if self.wavefront_seconds > 0 else float("nan")

    def read_image(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels (h, w, 3) uint8 of the image (read from the canvas's level 0)."""
        from .canvas.store import CanvasStore

        h, w = self.shape
        store = CanvasStore.open(self.canvas, "r")
        return np.ascontiguousarray(store.read_tissue_raw(0, y0, min(y1, h), x0, min(x1, w)))

    def read_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(_mask_array(self.canvas, mode="r")[y0:y1, x0:x1])

    def image(self) -> np.ndarray:
        return self.read_image(0, self.shape[0], 0, self.shape[1])

    def mask(self) -> np.ndarray:
        return self.read_mask(0, self.shape[0], 0, self.shape[1])

    def latents(self) -> np.ndarray:
        """The image's latents (C, lh, lw) float32."""
        from .canvas.store import CanvasStore

        lh, lw = self.settings["latent_shape"]
        return np.asarray(CanvasStore.open(self.canvas, "r").latents[:, :lh, :lw])


@dataclass
class BatchRun:
    """What :func:`generate_batch` did: one entry per image (index, seed, paths, worker, seconds, skipped)."""

    images: list[dict]
    workers: list[str]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------------------------------- coordinator
def _labels_for(mask, mask_scale, size, num_classes: int) -> np.ndarray:
    # exactly generate()'s preparation of a given mask
    from .sampling.masks import labels_at_scale, validate_labels

    labels = validate_labels(np.asarray(mask), num_classes)
    if mask_scale not in (None, 1) or (size is not None and tuple(size) != labels.shape):
        labels = labels_at_scale(labels, mask_scale, size)
    return labels


def _job_settings(
    info: dict,
    options: SamplingOptions,
    *,
    seed,
    mask_omega,
    block,
    shape,
    mask_kind,
    mask_sha1,
    context,
    decode_tile,
    latent_hw,
) -> dict:
    return {
        **options.recorded(),
        "max_batch": int(options.max_batch),
        "seed": int(seed),
        "mask_omega": None if mask_omega is None else float(mask_omega),
        "block": int(block),
        "image_shape": [int(shape[0]), int(shape[1])],
        "latent_shape": [int(latent_hw[0]), int(latent_hw[1])],
        "mask": mask_kind,
        "mask_sha1": mask_sha1,
        "context": context,
        "decode_tile": int(decode_tile),
        "model_name": info["name"],
        "num_classes": info["num_classes"],
        "pixel_size_um": info["pixel_size_um"],
        "mask_ready": False,
        "job": "distributed-canvas",
    }


def _open_or_create(
    canvas: Path, info: dict, settings: dict, grid_px: tuple[int, int], tile_px: int, overwrite: bool
):
    from .canvas.store import CanvasStore

    if (canvas / "zarr.json").is_file():
        store = CanvasStore.open(canvas, "r+")
        old = store.settings
        diff = [k for k in JOB_KEYS if _norm(old.get(k)) != _norm(settings.get(k))]
        if store.grid.tile != tile_px or tuple(store.grid.shape) != tuple(grid_px):
            diff.append("grid")
        if not diff:
            return store, True
        store.close()
        if not overwrite:
            raise CanvasMismatchError(
                f"the canvas {canvas} holds another job (different {', '.join(diff)}); use another canvas "
                "folder, or overwrite it"
            )
    elif canvas.exists() and canvas.is_dir() and any(canvas.iterdir()) and not overwrite:
        raise FileExistsError(f"{canvas} exists and is not a canvas; choose another canvas folder")
    store = CanvasStore.create(
        canvas,
        shape_px=grid_px,
        model_name=info["name"],
        settings=settings,
        latent_channels=info["latent_channels"],
        downsampling=info["downsampling"],
        tile=tile_px,
        overwrite=True,
    )
    return store, False


def _norm(value):
    if isinstance(value, (tuple, list)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def generate_canvas(
    client: Client,
    model: str | os.PathLike,
    canvas: str | os.PathLike,
    *,
    mask=None,
    size: tuple[int, int] | None = None,
    mask_scale: int | None = None,
    context="adenocarcinoma",
    omega: float | None = None,
    mask_omega: float | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    mode: str = "batched",
    block: int = 64,
    halo: int = 16,
    max_batch: int = 64,
    decode_tile: int = DECODE_TILE,
    device: str | None = None,
    torch_threads: int | None = None,
    retries: int = RETRIES,
    overwrite: bool = False,
    pyramid: bool = True,
    pyramid_group: int = PYRAMID_GROUP,
    progress: Callable[[int, int], None] | None = None,
    task_hook: Callable[[str, int, int], None] | None = None,
) -> CanvasRun:
    """Generate one image on the cluster of ``client`` into the canvas folder ``canvas`` (resuming it if it
    holds the same job), as a coloured wavefront of ``block``-latent blocks.

    The arguments are those of :func:`~napari_diffinfinite.generation.generate` (``model`` is the
    ``load_model`` spec, a path every worker can read); with the same ``seed``, mask and ``block``, the image
    equals ``generate``'s. ``canvas`` must be a folder every worker can write (a shared file system).

    ``decode_tile``: the seamless decode's grid (latents), 64 as in ``generate``. With a local decoder
    (``decoder_margin``) it only sets the chunking (pixels may differ by float rounding); with the Hann decode
    it changes the blend. Blocks that are multiples of it decode without overlap.

    ``device`` / ``torch_threads``: the workers' device and torch intra-op threads (``None``: their default).
    ``retries``: automatic re-runs of a task that raises. ``overwrite``: replace a canvas that holds another
    job (otherwise :class:`CanvasMismatchError`).

    ``pyramid``: keep the canvas's coarser levels up to date (for viewing the canvas in napari). The
    coordinator updates them once per aligned group of ``pyramid_group`` x ``pyramid_group`` blocks, when the
    group's last block is decoded, and only then marks the group's blocks done (status 2): one update per
    group costs a few times less than one per block. Without it, level 0 alone is written (all an export
    reads), and the blocks are still marked done group by group.

    ``progress(finished_blocks, blocks)`` runs on the calling thread as blocks are decoded.
    ``task_hook(kind, i, j)`` runs on the worker at the start of every task (kind ``"block"``, ``"decode"`` or
    ``"mask"``), for instrumentation and tests.
    """
    from .canvas.grid import Rect
    from .canvas.store import STATUS_LATENTS, STATUS_PIXELS

    t_start = time.perf_counter()
    if mask is None and size is None:
        raise ValueError("give a mask, or a size (H, W) to generate one")
    if pyramid_group < 1 or pyramid_group & (pyramid_group - 1):
        raise ValueError(f"pyramid_group must be a power of two, got {pyramid_group}")
    if block <= 0 or halo < 0:
        raise ValueError(f"block must be positive and halo non-negative, got block={block}, halo={halo}")
    canvas = Path(canvas).absolute()
    ref = _model_ref(model, device, torch_threads)
    _register(client, ref)
    info = client.submit(
        _model_info,
        ref,
        context if mask is None else None,
        pure=False,
        key=f"diffinfinite-info-{uuid.uuid4().hex[:8]}",
    ).result()
    # the lookahead never leaves the halo (generate_block's rule); recorded, and checked on resume
    options = info["sampling"].replaced(
        steps=steps or None,
        omega=omega,
        sampler=sampler,
        mode=mode,
        halo=halo,
        lookahead=min(LOOKAHEAD, halo),
        max_batch=max_batch,
    )
    steps = options.steps
    if mask is None:  # the mask model's guidance, recorded only when it generates the mask
        mask_omega = info["default_mask_omega"] if mask_omega is None else float(mask_omega)
    else:
        mask_omega = None
    d = info["downsampling"]
    if mask is not None:
        labels = _labels_for(mask, mask_scale, size, info["num_classes"])
        h, w = labels.shape
        mask_sha1 = hashlib.sha1(np.ascontiguousarray(labels.astype(np.uint8)).tobytes()).hexdigest()
        mask_sha1 += f"-{h}x{w}"
        context_display = None
    else:
        if not info["has_mask_model"]:
            raise ValueError(f"model {info['name']!r} has no mask model; paint or load a mask instead")
        labels = None
        h, w = (int(v) for v in size)
        mask_sha1 = None
        context_display = info["context_display"]
    if h <= 0 or w <= 0:
        raise ValueError(f"the image size must be positive, got {h} x {w}")
    lh, lw = -(-h // d), -(-w // d)
    rows, cols = -(-lh // block), -(-lw // block)
    tile_px = block * d
    settings = _job_settings(
        info,
        options,
        seed=seed,
        mask_omega=mask_omega,
        block=block,
        shape=(h, w),
        mask_kind="given" if mask is not None else "generated",
        mask_sha1=mask_sha1,
        context=context_display,
        decode_tile=decode_tile,
        latent_hw=(lh, lw),
    )
    store, _resumed = _open_or_create(
        canvas, info, settings, (rows * tile_px, cols * tile_px), tile_px, overwrite
    )
    outstanding: dict[str, tuple[str, tuple[int, int]]] = {}
    futures: dict[str, Any] = {}
    try:
        token = uuid.uuid4().hex[:8]
        # ------------------------------------------------------------------ the mask (labels: coordinator)
        if not store.settings.get("mask_ready"):
            if labels is not None:
                _mask_array(canvas, mode="w", shape=(h, w))[...] = labels.astype(np.uint8)
            else:
                _mask_array(canvas, mode="w", shape=(h, w))
                client.submit(
                    _mask_task,
                    ref,
                    str(canvas),
                    (h, w),
                    context,
                    seed,
                    steps,
                    mask_omega,
                    mode,
                    task_hook,
                    retries=retries,
                    pure=False,
                    key=f"diffinfinite-mask-{token}",
                ).result()
            arr = _mask_array(canvas, mode="r")
            lat = np.asarray(arr.oindex[cell_centres(h, d), cell_centres(w, d)])  # as generate() reads it
            store.write_labels(0, 0, lat)
            store.update_settings(mask_ready=True)

        # ------------------------------------------------------------------ the wavefront
        job = CanvasJob(
            canvas=str(canvas),
            latent_shape=(info["latent_channels"], lh, lw),
            block=block,
            seed=int(seed),
            options=options,
            decode_tile=int(decode_tile),
            decode_margin=info["decode_margin"],
            downsampling=d,
        )
        context_deps, decode_deps = block_dependencies(job)
        sample_waiters: dict[tuple[int, int], list] = {k: [] for k in context_deps}
        decode_waiters: dict[tuple[int, int], list] = {k: [] for k in context_deps}
        for k, deps in context_deps.items():
            for dep in deps:
                sample_waiters[dep].append(k)
        for k, deps in decode_deps.items():
            for dep in deps:
                decode_waiters[dep].append(k)
        status = store.read_status()[:rows, :cols]
        has_latents = {(int(a), int(b)) for a, b in np.argwhere(status >= STATUS_LATENTS)}
        has_pixels = {(int(a), int(b)) for a, b in np.argwhere(status == STATUS_PIXELS)}
        resumed = len(has_pixels)
        submitted: set[tuple[str, tuple[int, int]]] = set()
        ac = as_completed([], with_results=False)

        def submit(kind: str, k: tuple[int, int]) -> None:
            i, j = k
            if kind == "block":
                fn, prio = _sample_block_task, _PRIORITY_SAMPLE - (i + j)
            else:
                fn, prio = _decode_block_task, -(i + j)
            key = f"diffinfinite-{kind}-{token}-{i}-{j}"
            fut = client.submit(
                fn, ref, job, i, j, task_hook, key=key, pure=False, retries=retries, priority=prio
            )
            submitted.add((kind, k))
            outstanding[key] = (kind, k)
            futures[key] = fut
            ac.add(fut)

        def consider_sample(k):
            if (
                k not in has_latents
                and ("block", k) not in submitted
                and all(dep in has_latents for dep in context_deps[k])
            ):
                submit("block", k)

        def consider_decode(k):
            if (
                k not in has_pixels
                and ("decode", k) not in submitted
                and k in has_latents
                and all(dep in has_latents for dep in decode_deps[k])
            ):
                submit("decode", k)

        t_wave = time.perf_counter()
        for k in sorted(context_deps, key=lambda k: (k[0] + k[1], k[0])):
            consider_sample(k)
            consider_decode(k)
        total = rows * cols
        if progress is not None:
            progress(len(has_pixels), total)
        sampled = decoded = 0
        workers: set[str] = set()
        task_seconds = {"block": 0.0, "decode": 0.0}
        # blocks whose pixels are written but not yet marked done, by aligned group (see ``pyramid``)
        g = pyramid_group
        group_left: dict[tuple[int, int], int] = {}
        for k in context_deps:
            if k not in has_pixels:
                group_left[(k[0] // g, k[1] // g)] = group_left.get((k[0] // g, k[1] // g), 0) + 1
        group_done: dict[tuple[int, int], list] = {}

        def finish(k):
            gk = (k[0] // g, k[1] // g)
            group_done.setdefault(gk, []).append(k)
            group_left[gk] -= 1
            if group_left[gk] == 0:
                keys = group_done.pop(gk)
                if pyramid:
                    t = store.grid.tile
                    store.update_pyramid(
                        store.grid.clip(
                            Rect(gk[0] * g * t, (gk[0] + 1) * g * t, gk[1] * g * t, (gk[1] + 1) * g * t)
                        )
                    )
                store.set_status(keys, STATUS_PIXELS)

        for fut in ac:
            entry = outstanding.pop(fut.key, None)
            if entry is None:  # seen already (a result recomputed after its worker died)
                continue
            kind, k = entry
            futures.pop(fut.key, None)
            res = _result_or_raise(fut, f"the {kind} task of block {k}", retries)
            # drop the last reference now: a held future whose worker dies is recomputed, and the coordinator
            # may wait a long time for the next completion
            del fut
            workers.add(res["worker"])
            task_seconds[kind] += res["seconds"]
            if kind == "block":
                sampled += 1
                store.set_status(k, STATUS_LATENTS)
                has_latents.add(k)
                for other in sample_waiters[k]:
                    consider_sample(other)
                for other in decode_waiters[k]:
                    consider_decode(other)
            else:
                decoded += 1
                has_pixels.add(k)
                finish(k)
                if progress is not None:
                    progress(len(has_pixels), total)
        if len(has_pixels) != total:  # pragma: no cover - every block is reachable from wave 0
            raise RuntimeError(f"the wavefront stopped with {total - len(has_pixels)} blocks unfinished")
        return CanvasRun(
            canvas=canvas,
            shape=(h, w),
            grid=(rows, cols),
            blocks=total,
            sampled=sampled,
            decoded=decoded,
            resumed=resumed,
            workers=sorted(workers),
            seconds=time.perf_counter() - t_start,
            wavefront_seconds=time.perf_counter() - t_wave,
            settings=store.settings,
            task_seconds=task_seconds,
        )
    finally:
        if futures:
            client.cancel(list(futures.values()))
        store.close()


# ---------------------------------------------------------------------------------------------- batches
def _batch_paths(stem: Path, fmt: str, count: int) -> list[Path]:
    return [stem.with_name(f"{stem.name}_{k + 1:04d}") for k in range(count)]


def _image_task(
    ref: ModelRef,
    stem: str,
    fmt: str,
    index: int,
    count: int,
    seed: int,
    run: str,
    mask,
    gen_kwargs: dict,
    export_options,
    hook=None,
) -> dict:
    import json
    from dataclasses import replace

    from .generation import generate
    from .io import export_paths, export_region

    t0 = time.perf_counter()
    if hook is not None:
        hook("image", index, 0)
    paths = export_paths(stem, fmt, mask=True)
    sidecar = paths["sidecar"]
    if all(p.exists() for p in paths.values() if p is not None):
        try:  # written by an earlier attempt of this very task (killed after committing its files)
            doc = json.loads(sidecar.read_text())
            if doc.get("batch", {}).get("run") == run and doc.get("seed") == seed:
                return {
                    "index": index,
                    "seed": seed,
                    "paths": {k: str(v) for k, v in paths.items() if v},
                    "worker": _worker_name(),
                    "seconds": time.perf_counter() - t0,
                    "skipped": True,
                }
        except (OSError, ValueError):
            pass
    model = ref.get()
    result = generate(model, mask=mask, seed=seed, **gen_kwargs)
    settings = {
        **result.settings,
        "out": str(paths["image"]),
        "batch": {"index": index + 1, "count": count, "first_seed": seed - index, "run": run},
    }
    written = export_region(
        stem,
        result.image,
        result.mask,
        result.image.shape[:2],
        settings,
        fmt=fmt,
        options=replace(export_options, pixel_size_um=model.pixel_size_um),
        overwrite=True,
    )
    return {
        "index": index,
        "seed": seed,
        "paths": {k: str(v) for k, v in written.items() if v is not None},
        "worker": _worker_name(),
        "seconds": time.perf_counter() - t0,
        "skipped": False,
        "shape": list(result.image.shape[:2]),
        "window_evals": result.stats.window_evals,
    }


def batch_stems(out_stem: str | os.PathLike, count: int) -> list[Path]:
    """``<stem>_0001`` ... ``<stem>_<count>``: the export stems of a batch (the number is 1-based)."""
    return _batch_paths(Path(out_stem), "", count)


def generate_batch(
    client: Client,
    model: str | os.PathLike,
    out_stem: str | os.PathLike,
    *,
    count: int,
    seed: int = 0,
    fmt: str = "ome.tif",
    mask=None,
    size: tuple[int, int] | None = None,
    mask_scale: int | None = None,
    context="adenocarcinoma",
    omega: float | None = None,
    mask_omega: float | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    mode: str = "batched",
    block: int = 512,
    compression: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    torch_threads: int | None = None,
    retries: int = RETRIES,
    progress: Callable[[int, int], None] | None = None,
    task_hook: Callable[[str, int, int], None] | None = None,
) -> BatchRun:
    """``count`` independent images with seeds ``seed .. seed + count - 1``, one task each: image ``k``
    (1-based) is ``generate(model, seed=seed + k - 1, ...)`` exported to ``<out_stem>_<kkkk>.<fmt>`` (+ mask
    and sidecar), written by the worker (``out_stem`` must be on a file system the workers share).

    Every target is checked before any task starts (existing files need ``overwrite``). A task re-run after
    its worker died keeps the files its first attempt already committed.
    """
    from .io import PyramidOptions, export_paths
    from .io._atomic import check_target

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if mask is None and size is None:
        raise ValueError("give a mask, or a size (H, W) to generate one")
    t0 = time.perf_counter()
    stems = batch_stems(Path(out_stem).absolute(), count)
    for stem in stems:
        for p in export_paths(stem, fmt).values():
            if p is not None:
                check_target(p, overwrite=overwrite)
    ref = _model_ref(model, device, torch_threads)
    _register(client, ref)
    run = uuid.uuid4().hex[:8]
    mask_arg = None
    if mask is not None:
        # once to every worker (not once per task); broadcast, so a dead worker does not take the only copy
        mask_arg = client.scatter(np.asarray(mask), broadcast=True)
    gen_kwargs = {
        "size": None if size is None else tuple(size),
        "mask_scale": mask_scale,
        "context": context,
        "omega": omega,
        "mask_omega": mask_omega,
        "steps": steps,
        "sampler": sampler,
        "mode": mode,
        "block": block,
    }
    export_options = PyramidOptions(compression=compression)  # the pixel size is the model's, on the worker
    futures = [
        client.submit(
            _image_task,
            ref,
            str(stem),
            fmt,
            k,
            count,
            seed + k,
            run,
            mask_arg,
            gen_kwargs,
            export_options,
            task_hook,
            key=f"diffinfinite-image-{run}-{k + 1:04d}",
            pure=False,
            retries=retries,
            priority=-k,
        )
        for k, stem in enumerate(stems)
    ]
    images, workers = [], set()
    pending: dict = {}
    try:
        if progress is not None:
            progress(0, count)
        pending = {f.key: f for f in futures}
        ac = as_completed(futures)
        del futures  # held futures whose worker dies are recomputed: keep only the unfinished ones
        for fut in ac:
            pending.pop(fut.key, None)
            res = _result_or_raise(fut, f"image task {fut.key}", retries)
            del fut
            images.append(res)
            workers.add(res["worker"])
            if progress is not None:
                progress(len(images), count)
    finally:
        client.cancel(list(pending.values()))
    images.sort(key=lambda r: r["index"])
    return BatchRun(images=images, workers=sorted(workers), seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- command line
def run_cli(args, stem: Path, fmt: str) -> int:
    """``diffinfinite generate`` with ``--scheduler`` / ``--workers`` / ``--count`` / ``--canvas``."""
    from . import DISCLAIMER
    from .exit_codes import (
        EXIT_CANCELLED,
        EXIT_MASK,
        EXIT_MEMORY,
        EXIT_MODEL,
        EXIT_OK,
        EXIT_OUTPUT,
        EXIT_USAGE,
        report_error,
    )

    if args.scheduler and args.workers:
        return report_error(
            EXIT_USAGE, "give either --scheduler ADDRESS (an existing cluster) or --workers N (a local one)"
        )
    if args.workers is not None and args.workers < 1:
        return report_error(EXIT_USAGE, f"--workers must be >= 1, got {args.workers}")
    if args.count < 1:
        return report_error(EXIT_USAGE, f"--count must be >= 1, got {args.count}")
    if args.count > 1 and args.canvas:
        return report_error(EXIT_USAGE, "--canvas is for one image; --count N writes N separate images")
    from .io import export_paths

    targets = batch_stems(stem, args.count) if args.count > 1 else [stem]
    for s in targets:
        existing = [p for p in export_paths(s, fmt).values() if p is not None and p.exists()]
        if existing and not args.overwrite:
            return report_error(EXIT_OUTPUT, f"{existing[0]} exists; pass --overwrite to replace it")
    import torch

    from .model import CheckpointError, DeviceUnavailableError
    from .sampling.masks import MaskError, load_label_image

    local = not args.scheduler
    n_local = args.workers if args.workers is not None else default_workers()
    threads = max(1, (os.cpu_count() or 1) // n_local) if local else None
    from tqdm import tqdm

    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total,
                desc="blocks" if args.count == 1 else "images",
                unit="block" if args.count == 1 else "image",
                dynamic_ncols=True,
                disable=args.quiet,
            )
        bar.update(done - bar.n)

    try:
        with connect(args.scheduler, None if args.scheduler else n_local, dashboard=True) as client:
            link = dashboard_link(client)
            client_workers = client.nthreads()
            if not args.quiet:
                where = args.scheduler or f"a local cluster of {n_local} workers"
                print(f"dask: {where}; dashboard: {link or 'none (pip install bokeh to serve it)'}")
            ref = _model_ref(args.model, args.device, threads)
            try:
                _register(client, ref)
            except (FileNotFoundError, CheckpointError, DeviceUnavailableError, ValueError) as e:
                return report_error(EXIT_MODEL, str(e))
            mask = None
            if args.mask is not None:
                info = client.submit(_model_info, ref, None, pure=False).result()
                try:
                    mask = load_label_image(args.mask, info["num_classes"])
                except (FileNotFoundError, MaskError, ValueError) as e:
                    return report_error(EXIT_MASK, str(e))
            size = tuple(args.size) if args.size else None
            common = {
                "mask": mask,
                "size": size,
                "mask_scale": args.mask_scale,
                "context": args.context,
                "omega": args.omega,
                "mask_omega": getattr(args, "mask_omega", None),
                "steps": args.steps,
                "sampler": getattr(args, "sampler", None),
                "seed": args.seed,
                "mode": args.mode,
                "block": args.block,
                "device": args.device,
                "torch_threads": threads,
                "progress": progress,
            }
            try:
                if args.count > 1:
                    batch = generate_batch(
                        client,
                        args.model,
                        stem,
                        count=args.count,
                        fmt=fmt,
                        compression=args.compression,
                        overwrite=args.overwrite,
                        **common,
                    )
                    if bar is not None:
                        bar.close()
                    if not args.quiet:
                        for r in batch.images:
                            print(f"wrote {r['paths']['image']} (seed {r['seed']})")
                        print(
                            f"{len(batch.images)} images on {len(batch.workers)} workers in "
                            f"{batch.seconds:.1f} s ({batch.images_per_second:.2f} images/s)"
                        )
                        print(DISCLAIMER)
                    return EXIT_OK
                canvas = Path(args.canvas) if args.canvas else stem.with_name(stem.name + ".canvas")
                # the default canvas is a work area deleted after the export, which reads level 0 only
                run = generate_canvas(
                    client, args.model, canvas, overwrite=args.overwrite, pyramid=bool(args.canvas), **common
                )
            except CanvasMismatchError as e:
                return report_error(EXIT_OUTPUT, str(e))
            except ValueError as e:
                return report_error(EXIT_MASK if mask is not None else EXIT_USAGE, str(e))
            except (torch.cuda.OutOfMemoryError, MemoryError) as e:
                return report_error(
                    EXIT_MEMORY, f"out of memory ({e}); use smaller blocks (--block 64) or --device cpu"
                )
            finally:
                if bar is not None:
                    bar.close()
    except KeyboardInterrupt:
        return report_error(
            EXIT_CANCELLED,
            "interrupted; finished blocks are kept in the canvas: run the same command again to resume",
        )
    except OSError as e:  # no scheduler at that address
        return report_error(EXIT_USAGE, f"cannot reach the dask scheduler {args.scheduler!r}: {e}")

    from .io import PyramidOptions, export_region

    gen_settings = {
        "model": run.settings["model_name"],
        "seed": args.seed,
        "omega": run.settings["omega"],
        "mask_omega": run.settings.get("mask_omega"),
        "steps": run.settings["steps"],
        "sampler": run.settings["sampler"],
        "mode": args.mode,
        "block": args.block,
        "context": run.settings["context"],
        "mask": run.settings["mask"],
        "size": list(run.shape),
        "pixel_size_um": run.settings["pixel_size_um"],
    }
    from . import __version__

    settings = {
        **gen_settings,
        "version": __version__,
        "out": str(args.out),
        "distributed": {
            "blocks": run.blocks,
            "grid": list(run.grid),
            "workers": len(run.workers),
            "canvas": str(run.canvas),
        },
    }
    try:
        written = export_region(
            stem,
            run.read_image,
            run.read_mask,
            run.shape,
            settings,
            fmt=fmt,
            options=PyramidOptions(compression=args.compression, pixel_size_um=run.settings["pixel_size_um"]),
            overwrite=args.overwrite,
        )
    except (OSError, ValueError) as e:
        return report_error(EXIT_OUTPUT, str(e))
    if not args.canvas:  # the default canvas folder was a work area: the exported files hold the result
        shutil.rmtree(run.canvas, ignore_errors=True)
    if not args.quiet:
        for path in written.values():
            if path is not None:
                print(f"wrote {path}")
        h, w = run.shape
        print(
            f"{w}x{h} px: {run.blocks} blocks ({run.grid[0]} x {run.grid[1]}; {run.sampled} sampled, "
            f"{run.decoded} decoded, {run.resumed} resumed) on {len(run.workers)} workers in "
            f"{run.seconds:.1f} s ({run.blocks_per_second:.2f} blocks/s)"
        )
        n_workers = n_local if local else len(client_workers)
        if run.blocks < 2 * n_workers:
            print(
                f"note: {run.blocks} blocks for {n_workers} workers leave workers idle; a smaller --block "
                "(e.g. 64 latents = 512 px) gives more blocks per wavefront colour (the image changes "
                "with it)"
            )
        print(DISCLAIMER)
    return EXIT_OK
