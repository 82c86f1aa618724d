"""Inference backends: run a stored model on a NumPy batch with PyTorch or ONNX Runtime.

A :class:`Predictor` maps a float32 batch to the model's raw output as a float32 array, whatever
runs it. On a GPU the default is PyTorch; on the CPU, ONNX Runtime for the 2D U-Net and PyTorch
(channels-last) for the 3D classifiers, whichever is faster (see :func:`resolve_backend`). The
backends differ by float32 summation order only: classifier probabilities agree to about 1e-6;
the U-Net's logits reach +-300 on real scans, where either float32 result is off by up to 2e-4 in
probability near 0.5 against float64.

The ONNX graph is exported once per weights file and cached: next to the model
(``model-<key>.onnx``, key = hash of the weights and the export settings) or, where the model
folder is read-only, under ``$MEDCAD_CACHE_DIR`` (default ``~/.cache/medcad``) ``/onnx/``.
ONNX files are protobuf, not pickles.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError, MedcadError
from medcad.io.atomic import atomic_path
from medcad.models.store import DESCRIPTION_NAME, WEIGHTS_NAME, ModelDescription

BACKENDS = ("auto", "onnx", "torch")
#: ONNX opset of the exported graphs (part of the cache key).
ONNX_OPSET = 17


class Predictor:
    """A model ready to run: ``predictor(batch) -> output`` on float32 NumPy arrays.

    ``map(batches)`` runs many batches, ``workers`` of them at a time on threads (both runtimes
    release the GIL while computing; one single-threaded run per core beats one run spread over
    the cores for these small networks and degrades less when other processes share the CPU).
    """

    backend: str = ""
    description: ModelDescription
    workers: int = 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def map(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order (``workers`` at a time)."""
        return ordered_map(self, batches, self.workers)


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(function, items)`` on ``workers`` threads, in order, at most ``2 * workers`` items in flight."""
    if workers <= 1:
        yield from map(function, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class TorchPredictor(Predictor):
    """Runs the PyTorch model under ``torch.inference_mode`` on ``device``.

    On the CPU the model and its inputs are channels-last (oneDNN's fast layout for 2D and 3D
    convolutions: the 3D classifier runs about 1.4x faster per CPU second than plain PyTorch
    or ONNX Runtime). On a GPU, convolutions and matrix products run in full float32: PyTorch's
    default TF32 convolutions (10-bit mantissa) moved the book U-Net's output by enough to flip
    voxels at the 0.5 threshold (438 instead of ONNX Runtime's 437 candidates on an H200).
    """

    model: object
    description: ModelDescription
    device: str = "cpu"
    workers: int = 1
    backend: str = "torch"

    def __post_init__(self) -> None:
        self.layout = _channels_last(self.description) if self.device == "cpu" else None
        if self.layout is not None:
            self.model = self.model.to(memory_format=self.layout)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        inputs = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if self.layout is not None:
            inputs = inputs.contiguous(memory_format=self.layout)
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                output = self.model(inputs)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        return output.float().cpu().contiguous().numpy()


def _channels_last(description: ModelDescription):
    import torch

    kind = description.preprocessing.get("kind")
    return {"slice_context": torch.channels_last, "crop3d": torch.channels_last_3d}.get(kind)


@dataclass
class OnnxPredictor(Predictor):
    """Runs an exported ONNX graph with ONNX Runtime on the CPU."""

    session: object
    description: ModelDescription
    onnx_path: Path
    workers: int = 1
    backend: str = "onnx"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


def resolve_backend(backend: str = "auto", device: str | None = None, kind: str | None = None) -> str:
    """The backend ``"auto"`` picks: PyTorch on a GPU; on the CPU by the model's input ``kind``.

    On the CPU, 2D slice models (``slice_context``) run on ONNX Runtime when it is installed
    (2.7x fewer CPU seconds than PyTorch for the book's U-Net), 3D crop models (``crop3d``) on
    PyTorch channels-last: ONNX Runtime's 3D convolution unfolds 64 MB per crop in the first
    block, and with one run per core the two runs compete for memory bandwidth (674 crops of
    LIDC-IDRI-0001 on the 2-core AVX2 machine: 9.7 s against 5.7 s, though one run alone is
    only 10 % slower per crop). Measured with ``benchmarks/cad_inference.py``.
    """
    if backend not in BACKENDS:
        raise MedcadError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend != "auto":
        return backend
    if (device or default_device()) != "cpu" or kind == "crop3d":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


def default_device() -> str:
    """``"cuda"`` when a GPU is usable, else ``"cpu"`` (without importing torch where no GPU driver is)."""
    if not any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/kfd")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_predictor(folder: str | Path, backend: str = "auto", device: str | None = None,
                   threads: int | None = None) -> Predictor:
    """Loads a stored model for inference with the chosen backend (errors name the folder).

    The ONNX backend uses the cached export when there is one, without importing PyTorch.

    Args:
        threads: CPU cores to use (default: all this process may run on). Both backends run that
            many single-threaded inferences at once (one thread per run degrades least when other
            processes share the CPU); for PyTorch on the CPU this sets ``torch.set_num_threads(1)``
            for the process.
    """
    from medcad.models.store import load_model, read_description

    device = device or default_device()
    description = read_description(folder)
    backend = resolve_backend(backend, device, description.preprocessing.get("kind"))
    cores = threads or usable_cores()
    if backend == "onnx":
        onnx_path = _cached_onnx(Path(folder), lambda: load_model(folder, map_location="cpu")[0], description)
        return OnnxPredictor(_onnx_session(onnx_path), description, onnx_path, workers=cores)
    model, description = load_model(folder, map_location=device)
    if device != "cpu":
        return TorchPredictor(model, description, device)
    import torch

    torch.set_num_threads(1)
    return TorchPredictor(model, description, device, workers=cores)


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def export_onnx(model, description: ModelDescription, path: str | Path) -> Path:
    """Exports a model to ONNX (dynamic batch; dynamic height / width for 2D segmenters), atomically."""
    import torch

    example, dynamic = _example_input(description)
    axes = {"input": dynamic, "output": dynamic}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exports these plain CNNs in seconds;
        # the torch.export-based one takes tens of seconds for the same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(model.cpu().eval(), (example,), str(tmp), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes=axes, opset_version=ONNX_OPSET)
    return Path(path)


def _example_input(description: ModelDescription):
    import torch

    kwargs, preprocessing = description.kwargs, description.preprocessing
    if preprocessing.get("kind") == "slice_context":
        channels = int(kwargs.get("in_channels", 2 * preprocessing.get("context_slices", 3) + 1))
        return torch.zeros(1, channels, 64, 64), {0: "batch", 2: "height", 3: "width"}
    shape = preprocessing.get("crop_irc") or kwargs.get("input_shape")
    if not shape:
        raise MedcadError(f"cannot export {description.name}: its description gives no input size")
    return torch.zeros(1, int(kwargs.get("in_channels", 1)), *shape), {0: "batch"}


def _cached_onnx(folder: Path, build_model: Callable, description: ModelDescription) -> Path:
    """The ONNX file for these weights, exported (from ``build_model()``) on first use."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(weights, "weights file not found")
    digest = hashlib.sha256()
    digest.update(weights.read_bytes())
    digest.update((folder / DESCRIPTION_NAME).read_bytes())
    digest.update(f"opset={ONNX_OPSET};exporter=torchscript".encode())
    name = f"model-{digest.hexdigest()[:16]}.onnx"
    for candidate in (folder / name, _cache_dir() / name):
        if candidate.is_file():
            return candidate
    model = build_model()
    for target in (folder / name, _cache_dir() / name):
        try:
            return export_onnx(model, description, target)
        except PermissionError:
            continue
    raise InputError(folder, "cannot write the ONNX export next to the model nor in the cache folder")


def _cache_dir() -> Path:
    return Path(os.environ.get("MEDCAD_CACHE_DIR", Path.home() / ".cache" / "medcad")) / "onnx"


def _onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # parallel across batches instead (Predictor.map)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types for damaged graphs
        raise InputError(path, f"cannot load the ONNX export ({error}); delete it to export again") from error
