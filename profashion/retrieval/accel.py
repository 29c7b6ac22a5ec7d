"""Faster inference for embedding galleries and queries: ONNX Runtime or bf16 autocast, checked against fp32.

Backends of :class:`Embedder` (the same ``embed`` / ``embed_all`` as the model):

- ``fp32``: the PyTorch model as it is (always available, the reference);
- ``onnx``: ``embed_all`` exported with ``torch.onnx.export`` (dynamic batch, the model's input size) and
  run by ONNX Runtime's CPU provider. Numerically the same model (differences ~1e-7), so retrieval mAP is
  unchanged; measured 2-5x faster than PyTorch fp32 on this CPU (benchmarks/bench_accel.py). Models whose
  forward cannot be exported (data-dependent loops, NumPy steps) fall back to fp32 with the reason kept
  in ``Embedder.note``;
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` (oneDNN). Changes embeddings by ~1e-3; it is used
  only when asked for, and the benchmark reports the mAP it costs.

``auto`` picks ``onnx`` when it exports and matches fp32 on a probe batch, else ``fp32``. On a GPU
(``cuda`` device) every backend is the PyTorch model: the accelerators here are for the CPU.

The exported graph is cached as a file keyed by the checkpoint's fingerprint and the input size, so a
restarted app does not export again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from profashion.io import atomic_path

BACKENDS = ("fp32", "bf16", "onnx", "auto")
PROBE_TOLERANCE = 1e-4  # max |onnx - fp32| on the probe batch for the export to be trusted

log = logging.getLogger(__name__)


@contextlib.contextmanager
def one_thread():
    """Run PyTorch on one intra-op thread inside the block (one query image, one explain call).

    Measured on this 2-core machine under load (benchmarks/bench_retrieval.py, README): one 64-px image
    through the demo ASEN took 352 ms on 2 threads and 3.7 ms on 1, because each of the many small ops
    waits at a barrier for a second thread that the busy machine has descheduled. Only the speed of
    concurrent callers is affected if two of them overlap here (the setting is process-wide).
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _EmbedAll(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.embed_all(x)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model, path: str | os.PathLike, batch: int = 2) -> Path:
    """Export ``model.embed_all`` for (B, 3, S, S) inputs (dynamic B) to ``path``, atomically."""
    path = Path(path)
    s = model.preprocess.crop
    x = torch.randn(batch, 3, s, s, device="cpu")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_EmbedAll(model).cpu(), (x,), dynamo=True, input_names=["images"],
                                        output_names=["embeddings"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
        with atomic_path(path) as tmp:
            program.save(str(tmp))
    finally:
        model.train(was_training)
    return path


class Embedder:
    """``embed`` / ``embed_all`` of a model through a backend; everything else is the model's."""

    def __init__(self, model, backend: str = "auto", cache_dir: str | os.PathLike | None = None,
                 fingerprint: str | None = None, threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model = model.eval()
        self.requested = backend
        self.backend = "fp32"
        self.note = ""
        self._session = None
        on_cpu = model.device.type == "cpu"
        if backend in ("onnx", "auto") and on_cpu:
            if not onnx_available():
                self.note = "onnxruntime is not installed"
            else:
                try:
                    self._session = self._load_session(cache_dir, fingerprint, threads)
                    self.backend = "onnx"
                except Exception as exc:  # noqa: BLE001 - any export failure means: use PyTorch
                    self.note = f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            if backend == "onnx" and self.backend != "onnx":
                log.warning("%s: falling back to fp32: %s", model.name, self.note)
        elif backend == "bf16" and on_cpu:
            self.backend = "bf16"
        elif not on_cpu and backend != "fp32":
            self.note = "on a GPU the PyTorch model is used"

    def _load_session(self, cache_dir, fingerprint, threads):
        import onnxruntime as ort

        s = self.model.preprocess.crop
        if cache_dir is not None and fingerprint:
            path = Path(cache_dir) / f"{self.model.name}-{fingerprint[:16]}-{s}px.onnx"
        else:
            path = Path(tempfile.mkdtemp(prefix="profashion-onnx-")) / f"{self.model.name}-{s}px.onnx"
        if not path.is_file():
            export_onnx(self.model, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.log_severity_level = 3
        # no busy-waiting between runs: the decoding threads of the gallery pipeline need those cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        # trust the graph only if it computes what the model computes
        x = torch.randn(3, 3, s, s, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = self.model.embed_all(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        err = float(np.abs(got - ref).max())
        if not err <= PROBE_TOLERANCE:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"the exported graph differs from the model by {err:.2e}")
        return session

    # -- the model interface ------------------------------------------------------------------------
    @torch.no_grad()
    def embed_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "onnx":
            out = self._session.run(None, {self._session.get_inputs()[0].name: x.cpu().numpy()})[0]
            return torch.from_numpy(out)
        if self.backend == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model.embed_all(x).float()
        return self.model.embed_all(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, attribute_ids) -> torch.Tensor:
        if self.backend == "onnx":
            ids = self.model.check_attributes(attribute_ids, len(x)).cpu()
            return self.embed_all(x)[torch.arange(len(x)), ids]
        if self.backend == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model.embed(x, attribute_ids).float()
        return self.model.embed(x, attribute_ids)

    def __getattr__(self, name):  # preprocess, explain, name, num_attributes, device, ...
        if name == "model":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):  # evaluation code toggles modes; inference stays inference
        return self
