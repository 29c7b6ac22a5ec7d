"""Fine-tuning jobs of the app (no Gradio here): launched outside the web process, their state on disk.

A job is a folder ``<jobs root>/<job id>/`` holding

- ``job.json``: model, dataset, the training settings asked for, pid, status (queued / running / finished /
  failed / stopped), times and the exit code, rewritten atomically at every change;
- ``train.json``: the job's training configuration (:class:`~profashion.train.config.TrainConfig` as JSON;
  settings left out come from the preset);
- ``train.log``: the trainer's stdout and stderr (appended to when the job is resumed);
- ``run/``: the trainer's run folder (``args.json``, ``metrics.jsonl``, ``progress.json``, ``last/``, ``best/``);
- ``<name>/``: the dataset imported from a CSV catalogue, when the job was launched on one;
- ``test.json``, ``test-random.json``: the best checkpoint's test mAP, and random embeddings' on the same queries.

The job runs ``python -m profashion.cli train --config <job>/train.json --out <job>/run`` (``--resume`` to
continue), then ``profashion eval`` of its best checkpoint and of random embeddings on the test split, as one
``sh -c`` chain in its own process group, so a stop is a SIGTERM to the group and the web process never trains.
A CSV catalogue is imported (:func:`~profashion.data.csv_import.import_csv`, its attribute and image columns
chosen by the caller, optionally its first rows only) into the job's folder at launch, in the web process (it
reads no image). A dataset whose validation split has fewer than :data:`MIN_VAL_QUERIES` queries for a trained
attribute is refused before anything starts: its validation mAP would mean nothing.

A finished job's model is private to its owner until the owner publishes it (:meth:`JobManager.publish`):
``job.json`` then records a readable name (``asen fine-tuned on products12k (job 765b)``) under which the app
serves it to everyone.
Jobs written by older versions (``job.json`` with the trainer's ``args`` and no ``train.json``) are shown;
one resumes from its run's ``args.json`` when it has one. Everything is read back from disk, so a
page reload, a second browser or a restarted app sees the same jobs; a job whose process ended without
its status being written (the app was down, the process was killed) is judged from its run folder:
every epoch done means finished, otherwise "failed (process ended without finishing; resume it)".

Datasets are restricted to the allowed data roots (given by the caller: the app passes the repository's
``data/``, ``../shared/data`` beside it and the app cache; ``PROFASHION_DATA_ROOTS``, os.pathsep-separated,
replaces them). One job runs at a
time: a second launch while one runs is refused (naming the running job only to the browser that launched it).

A job belongs to whoever launched it: ``owner`` is a secret token (the app keeps a random one per browser in
``gr.BrowserState``, so it survives reloads; an API client may pass its own); ``job.json`` stores only its
SHA-256 (:func:`owner_key`). Only the same owner sees, stops or resumes the job (:meth:`JobManager.job_for`,
:meth:`JobManager.list_for`); another owner is refused with one sentence (:data:`NOT_YOURS`). Jobs launched
without an owner (the CLI, an API client that sends none) and jobs of older versions are anonymous: seen and
controlled by anonymous callers only (the CLI's; the app serves no anonymous caller: ``tab_finetune.NEED_OWNER``).
Publishing is off wherever training is (:data:`PUBLISH_OFF`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from profashion.data.splits import DatasetError, load_dataset
from profashion.device import gpu_available
from profashion.io import JSONLimitError, atomic_write_json, loads_json, read_json
from profashion.models.backbones import WEIGHT_SUFFIXES
from profashion.train.config import TrainConfig, offered_presets, planned_epochs, read_config

ENV_JOBS = "PROFASHION_JOBS"
ENV_DATA_ROOTS = "PROFASHION_DATA_ROOTS"
ENV_TRAINING = "PROFASHION_TRAINING"
TRAINING_OFF = ("training is off on this public Space: duplicate the Space (⋮ > Duplicate this Space) and set "
                f"{ENV_TRAINING}=1 in its settings to fine-tune models there")
ACTIVE = ("queued", "running")
LOG_NAME = "train.log"
CONFIG_NAME = "train.json"
DIED = "process ended without finishing"
MIN_VAL_QUERIES = 20  # validation queries per trained attribute below which a validation mAP means nothing
TEST_NAME, RANDOM_NAME = "test.json", "test-random.json"
CSV_EVAL_LAYOUT = "all-attributes"  # several times more validation queries per attribute than the ASEN layout
SKIPPED_FOLDERS = ("jobs", "indexes", "results", "projections", "images", "masks", "trunk-features", "weights")
GENERIC_CSV_NAMES = ("labels", "label", "catalogue", "catalog", "metadata", "data", "styles", "images")
STOP_GRACE_S = 15.0
MAX_PATH_CHARS = 1024
MAX_MODEL_CONFIG_BYTES = 64 << 10  # a job's model settings (a few dozen bytes in practice)
JOB_NICENESS = 10  # jobs train at a lower CPU priority than the app (see benchmarks/load_test.py)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The one sentence for a job id that is unknown and for another owner's job: the refusal never confirms that a
# job exists.
NOT_YOURS = ("there is no job {} of this browser: a job is seen, stopped, resumed and published only by the browser "
             "that launched it; pick one from the job list")
PUBLISH_OFF = ("publishing is off on this public Space, as training is: duplicate the Space (⋮ > Duplicate this "
               f"Space) and set {ENV_TRAINING}=1 in its settings to publish models there")
BUSY = "a job is already training on this machine; one job runs at a time: wait for it to finish"


class JobError(ValueError):
    """A job request that cannot be honoured; the message is one sentence saying what to do."""


def default_jobs_root(cache_root: str | os.PathLike) -> Path:
    return Path(os.environ.get(ENV_JOBS) or Path(cache_root) / "jobs")


def private_folders(cache_root: str | os.PathLike) -> list[Path]:
    """What the app keeps in its cache that no job may train on or look into (beside the jobs folder): the kept
    uploads, the exports and the browser-state key."""
    cache = Path(cache_root)
    return [cache / "uploads", cache / "exports", cache / "browser-secret"]


def default_data_roots(cache_root: str | os.PathLike, roots: list[str | os.PathLike] = ()) -> list[Path]:
    """``PROFASHION_DATA_ROOTS`` (os.pathsep-separated) when set, else ``roots`` (the caller's, e.g. the app's
    folders beside the repository) and the cache root."""
    env = os.environ.get(ENV_DATA_ROOTS)
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p.strip()]
    return [*(Path(r) for r in roots), Path(cache_root)]


def training_enabled() -> bool:
    """Fine-tuning is on, except on a Hugging Face Space (``SPACE_ID`` set) whose owner has not set
    ``PROFASHION_TRAINING=1``; ``PROFASHION_TRAINING=0`` turns it off anywhere."""
    flag = os.environ.get(ENV_TRAINING, "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return not os.environ.get("SPACE_ID")


def _pid_alive(pid: int | None) -> bool:
    """The process exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_ours(pid: int, job_dir: Path) -> bool:
    """The pid still runs this job (and is not a reused pid): its command line names the job's run folder."""
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return _pid_alive(pid)  # no /proc: trust the pid
    return str(job_dir / "run") in cmd


def _whole_number(name: str, value, lo: int) -> int:
    """``value`` (a number or its text, as a form or an API client sends it) as an int of at least ``lo``."""
    try:
        f = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(value, bool) or not math.isfinite(f) or f != int(f):
        raise JobError(f"{name} must be a whole number, got {value!r:.40}")
    if f < lo:
        raise JobError(f"{name} must be at least {lo}, got {int(f)}")
    return int(f)


def owner_key(owner) -> str:
    """What a job record keeps of its owner: the SHA-256 of the token, "" (anonymous) when there is none."""
    if owner is None or owner == "":
        return ""
    return hashlib.sha256(str(owner).encode("utf-8", errors="replace")).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log, progress bars (carriage returns) reduced to their last state."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = []
    for ln in data.split("\n"):
        out.append(ln.rstrip("\r").split("\r")[-1])
    return "\n".join(out[-lines:]).strip("\n")


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV catalogue's header row (whitespace-stripped); DatasetError when unreadable."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"the CSV {path.name} cannot be read ({exc})") from None
    if not header:
        raise DatasetError(f"the CSV {path.name} is empty: expected a header row and one row per image")
    return [h.strip() for h in header]


def _first_rows(src: Path, dst: Path, rows: int) -> int:
    """Copy the header and the first ``rows`` non-blank rows of a CSV; the number of rows copied."""
    n = 0
    with open(src, encoding="utf-8-sig", newline="") as f, open(dst, "w", encoding="utf-8", newline="") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        writer.writerow(next(reader, []))
        for row in reader:
            if n >= rows:
                break
            if row and any(x.strip() for x in row):
                writer.writerow(row)
                n += 1
    return n


_ABS_PATH = re.compile(r"(?<![\w<>.~])/(?:[^\s/:'\"(),]+/)*([^\s/:'\"(),]+)")
_CAUSE = (re.compile(r"^error: (.+)$"), re.compile(r"^((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt)\b.*)$"))


def cause_of(log: str) -> str | None:
    """The cause of a failure in one sentence: the log's last ``error: ...`` line (the CLI's), else its last
    exception line; absolute paths reduced to their last component (apply public names first)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for pattern in _CAUSE:
        for ln in reversed(lines):
            m = pattern.match(ln)
            if m:
                text = _ABS_PATH.sub(r"\1", m.group(1)).strip()
                return text if len(text) <= 300 else text[:297] + "..."
    return None


JOB_FIELDS = {"id": str, "model": str, "dataset": str, "preset": str, "status": str}  # read by every view of a job


def job_record_problem(job, name: str) -> str | None:
    """What is wrong with a job record read from ``<jobs>/<name>/job.json`` (None when the fields every view of
    it reads are there, with their types)."""
    if not isinstance(job, dict):
        return "not a JSON object"
    for key, kind in JOB_FIELDS.items():
        if not isinstance(job.get(key), kind):
            return f"its {key!r} is missing or not a {kind.__name__}"
    if job["id"] != name:
        return "its 'id' is not its folder's name"
    for key in ("owner", "reason", "created"):
        if not isinstance(job.get(key, ""), str):
            return f"its {key!r} is not a string"
    return None


class JobOptions:
    """What a job may train on (the datasets under the data roots, their columns, presets, the GPU) and how
    server folders are named to visitors: a part of :class:`JobManager`, which holds the state."""

    def _public_names(self) -> list[tuple[Path, str]]:
        """(server folder, the name a visitor sees) pairs, the longest folder first: ``data/...`` and
        ``../shared/data/...`` for roots beside the repository, ``<data root N>`` for others, ``<jobs>``,
        ``.`` for the repository, ``python`` for the interpreter, ``~`` for the home folder."""
        names = [(self.root, "<jobs>"), (self.root.resolve(), "<jobs>")]
        home = Path(os.path.abspath(self.home))
        for i, r in enumerate(self.data_roots):
            real, plain = r.resolve(), Path(os.path.abspath(r))  # named by where it is given (a symlink may point away)
            name = f"<data root {i + 1}>"
            for p in (plain, real) if not self.hide_layout else ():  # a public Space names no folder at all
                if p.is_relative_to(home):
                    name = str(p.relative_to(home))
                    break
                if p.is_relative_to(home.parent):
                    name = "../" + str(p.relative_to(home.parent))
                    break
            names += [(real, name), (plain, name), (r, name)]
        home_name = "<app>" if self.hide_layout else "."
        names += [(Path(self.python), "python"), (self.home, home_name), (Path.home(), "~")]
        return sorted({(p, n) for p, n in names if str(p) not in ("", "/", ".")}, key=lambda pn: -len(str(pn[0])))

    def public(self, text: str) -> str:
        """``text`` (a path, a log, a message) with every server folder replaced by its public name."""
        for path, name in self._public_names():
            text = text.replace(str(path), name)
        return text

    def public_json(self, obj):
        """``obj`` (a job record: dicts, lists, text) with :meth:`public` applied to every string in it."""
        if isinstance(obj, str):
            return self.public(obj)
        if isinstance(obj, dict):
            return {k: self.public_json(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.public_json(v) for v in obj]
        return obj

    def _private(self, text: str) -> str:
        """A path given by its public name (``data/synth``, ``../shared/data/x``, ``<data root 2>/y``) on the
        server; other text unchanged."""
        for path, name in sorted(self._public_names(), key=lambda pn: -len(pn[1])):
            if name.startswith(("<data root", "data", "../")) and (text == name or text.startswith(name + "/")):
                return str(path) + text[len(name):]
        return text

    # -- options -----------------------------------------------------------------------------------------
    @property
    def gpu(self) -> bool:
        if self._gpu is None:
            self._gpu = gpu_available()
        return self._gpu

    def presets(self) -> list[str]:
        """The presets offered on this hardware: demo on CPU, demo and paper on a GPU."""
        return offered_presets(self.gpu)

    def datasets(self) -> list[tuple[str, str]]:
        """(label, public path) of every dataset folder (meta.json + a train split) and every CSV catalogue up to
        two levels below a root (folders first, then the CSVs)."""
        folders: dict[str, str] = {}
        csvs: dict[str, str] = {}
        jobs = self.root.resolve()

        def below(d: Path) -> list[Path]:  # the folders worth looking into (not the jobs', images', caches')
            return [p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")
                    and p.name not in SKIPPED_FOLDERS and not p.resolve().is_relative_to(jobs)]

        for root in self.data_roots:
            if not root.is_dir():
                continue
            cands = [root, *below(root)]
            cands += [q for p in cands[1:] for q in below(p)]
            for d in cands:
                if (d / "meta.json").is_file() and (d / "label_train.txt").is_file():
                    folders.setdefault(self.public(str(d.resolve())), f"{d.name} ({self.public(str(d))})")
                for f in sorted(d.glob("*.csv")):
                    csvs.setdefault(self.public(str(f.resolve())), f"{f.name}: CSV catalogue ({self.public(str(f))})")
        return [(label, path) for path, label in [*folders.items(), *csvs.items()]]

    def columns(self, dataset) -> tuple[str, list[str]]:
        """("csv", the header's columns) of a CSV catalogue, ("folder", its attributes) of a dataset folder."""
        ds = self.resolve_dataset(dataset)
        try:
            if ds.is_file():
                return "csv", csv_header(ds)
            return "folder", list(load_dataset(ds).schema.names)
        except DatasetError as exc:
            raise JobError(self.public(str(exc))) from None

    def _confined(self, path, what: str) -> Path:
        """``path`` resolved (relative to ``home``), refused unless inside an allowed data root; nothing is said of
        whether a path outside them exists."""
        text = self._private(str(path).strip())
        roots = ", ".join(self.public(str(r)) for r in self.data_roots)
        if len(text) > MAX_PATH_CHARS or any(ord(c) < 32 for c in text):
            raise JobError(f"the {what} path is not a usable path (control characters or over {MAX_PATH_CHARS} "
                           f"characters); give a path inside the allowed data roots ({roots})")
        shown = self.public(str(path).strip())  # as the caller named it (a public name stays one), never expanded
        if text.startswith("~") and text != "~" and not text.startswith("~/"):
            # another account's home (~name): refused before it is looked up, so no answer tells whether the
            # account exists (expanduser raises for an unknown one)
            raise JobError(f"the {what} path {shown} is outside the allowed data roots ({roots}); set "
                           f"{ENV_DATA_ROOTS} to allow another folder")
        p = Path(text).expanduser()
        if ".." in p.parts:
            raise JobError(f"the {what} path {shown} contains '..'; give a path inside the allowed data roots "
                           f"({roots})")
        real = (p if p.is_absolute() else self.home / p).resolve()
        hidden = any(real == q.resolve() or real.is_relative_to(q.resolve()) for q in self.private)
        if hidden or not any(real == r.resolve() or real.is_relative_to(r.resolve()) for r in self.data_roots):
            raise JobError(f"the {what} path {shown} is outside the allowed data roots ({roots}); set "
                           f"{ENV_DATA_ROOTS} to allow another folder")
        return real

    def resolve_dataset(self, path) -> Path:
        """The dataset folder (with its meta.json) or CSV catalogue, refused when missing, outside the allowed
        roots or escaping them with '..'."""
        if path is None or str(path).strip() == "":
            raise JobError("no dataset chosen: pick a dataset folder or a CSV catalogue from the list")
        real = self._confined(path, "dataset")
        name = str(path).strip()
        if real.is_file() and real.suffix.lower() == ".csv":
            return real
        if not real.is_dir():
            raise JobError(f"the dataset {name} does not exist" if not real.exists() else
                           f"the file {name} is neither a dataset folder nor a CSV catalogue (.csv)")
        if not (real / "meta.json").is_file():
            raise JobError(f"the folder {name} is not a dataset (it has no meta.json): pick a dataset folder or a "
                           "CSV catalogue from the list")
        return real

    def check_validation(self, dataset: Path, attributes: list[str] | None = None) -> int:
        """The fewest validation queries of a trained attribute (``attributes``, default all); refused when the
        dataset cannot be read, names no such attribute, or has fewer than MIN_VAL_QUERIES for one of them."""
        try:
            ds = load_dataset(dataset)
        except DatasetError as exc:
            raise JobError(f"the dataset cannot be read: {exc}") from None
        names = list(ds.schema.names)
        unknown = [a for a in attributes or [] if a not in names]
        if unknown:
            raise JobError(f"the dataset has no attribute {', '.join(map(repr, unknown))}; its attributes are "
                           + ", ".join(names))
        valid = ds.splits.get("valid")
        q = valid.queries if valid is not None and valid.queries is not None else None
        counts = {a: int((q[:, 1] == names.index(a)).sum()) if q is not None else 0 for a in attributes or names}
        few = {a: n for a, n in counts.items() if n < MIN_VAL_QUERIES}
        if few:
            raise JobError(f"the dataset {ds.name} is too small to validate on: its validation split has "
                           + ", ".join(f"{n} queries for {a}" for a, n in few.items())
                           + f", and a validation mAP needs at least {MIN_VAL_QUERIES} queries per trained attribute "
                           "to mean anything; choose a bigger dataset (or more CSV rows), or train only attributes "
                           "with enough queries")
        return min(counts.values())

    @staticmethod
    def _has_test(dataset: Path) -> bool:
        test = load_dataset(dataset).splits.get("test")
        return test is not None and test.queries is not None and len(test.queries) > 0

    def _pretrained(self, value):
        """A job's ``pretrained`` setting: null, a named weight set (``imagenet``, a hub tag), or a weights file
        inside the data roots; any other path is refused before it is looked at."""
        if value is None or not isinstance(value, str):
            return value  # the config check names a wrong type
        if re.fullmatch(r"[A-Za-z0-9_.:+-]{1,100}", value) and not value.lower().endswith(WEIGHT_SUFFIXES):
            return value
        real = self._confined(value, "pretrained weights")
        if not real.is_file():
            raise JobError(f"the pretrained weights file {value} does not exist in the data roots")
        return str(real)


class JobRecords:
    """The jobs on disk: each job's record read, checked and brought up to date with its process, its progress,
    metrics, log, test result and best checkpoint, and publishing: a part of :class:`JobManager`."""

    # -- jobs on disk ------------------------------------------------------------------------------------
    def _dir(self, job_id: str) -> Path:
        job_id = str(job_id or "").strip()
        if not job_id:
            raise JobError("no job chosen: pick one from the job list")
        d = self.root / job_id
        if not JOB_ID.fullmatch(job_id) or not (d / "job.json").is_file():  # what another owner's job is told
            raise JobError(NOT_YOURS.format(repr(job_id[:60])))
        return d

    def _read(self, d: Path) -> dict:
        try:
            job = read_json(d / "job.json", what=f"the job file {d / 'job.json'}")
        except (OSError, ValueError) as exc:
            raise JobError(f"the job file {d / 'job.json'} cannot be read ({exc})") from None
        problem = job_record_problem(job, d.name)
        if problem:  # a hand-edited or damaged record: the job is listed nowhere, not a bare error in the page
            raise JobError(f"the job file {d / 'job.json'} is damaged ({problem}); remove its folder to forget it")
        return job

    def _write(self, job: dict) -> None:
        atomic_write_json(self.root / job["id"] / "job.json", job)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        ds = [d for d in self.root.iterdir() if d.is_dir() and (d / "job.json").is_file()]
        return sorted(d.name for d in ds)

    def list(self) -> list[dict]:
        out = []
        for i in self.ids():
            try:
                out.append(self.get(i))
            except JobError:
                continue
        return sorted(out, key=lambda j: j.get("created", ""), reverse=True)

    def list_for(self, owner) -> list[dict]:
        """The jobs ``owner`` launched (anonymous jobs for an anonymous caller), newest first."""
        key = owner_key(owner)
        return [j for j in self.list() if j.get("owner", "") == key]

    def job_for(self, job_id: str, owner) -> dict:
        """The job's record (as :meth:`get`), refused unless ``owner`` launched it."""
        if not str(job_id or "").strip():
            raise JobError("no job chosen: pick one from the job list")
        shown = repr(str(job_id)[:60])
        try:
            job = self.get(job_id)
        except JobError:
            raise JobError(NOT_YOURS.format(shown)) from None
        if job.get("owner", "") != owner_key(owner):
            raise JobError(NOT_YOURS.format(shown))
        return job

    def _busy(self, owner) -> None:
        """Refuse a start while a job trains, naming it only to its owner."""
        busy = self.running()
        if busy is None:
            return
        if busy.get("owner", "") == owner_key(owner):
            raise JobError(f"job {busy['id']} is already training ({busy['status']}); one job runs at a time "
                           "on this machine: stop it or wait for it to finish")
        raise JobError(BUSY)

    def running(self) -> dict | None:
        for job in self.list():
            if job["status"] in ACTIVE:
                return job
        return None

    def get(self, job_id: str) -> dict:
        """The job's record, its status brought up to date with its process."""
        d = self._dir(job_id)
        with self._lock:
            job = self._read(d)
            was_active = job["status"] in ACTIVE
            if job["status"] in ACTIVE:
                proc = self._procs.get(job["id"])
                if proc is not None:
                    rc = proc.poll()
                    if rc is not None:
                        job = self._ended(job, rc)
                elif not (_pid_alive(job.get("pid")) and _is_ours(job["pid"], d)):
                    job = self._ended(job, None)
        if was_active and job["status"] == "finished" and self.on_finished is not None:
            self.on_finished(job)
        return job

    def _completed_epochs(self, d: Path) -> tuple[int, int | None]:
        done = len(self.metrics(d.name))
        try:
            total = planned_epochs(json.loads((d / "run" / "args.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            total = None
        return done, total

    def config(self, job_id: str) -> TrainConfig | None:
        """The job's training configuration: its ``train.json``, else (an older job) its run's ``args.json``;
        None when it has neither or they cannot be read."""
        d = self._dir(job_id)
        for path in (d / CONFIG_NAME, d / "run" / "args.json"):
            if path.is_file():
                try:
                    return TrainConfig.load(path)
                except (OSError, ValueError):
                    continue
        return None

    def total_epochs(self, job: dict) -> int | None:
        """The epochs the job plans (its configuration's, else its model's preset's); None when unknown."""
        try:
            cfg = self.config(job["id"]) or TrainConfig(model=job.get("model"), dataset=str(job.get("dataset")),
                                                        preset=job.get("preset") or "demo")
            return cfg.total_epochs
        except (ValueError, KeyError, TypeError, JobError):
            return None

    def _ended(self, job: dict, rc: int | None) -> dict:
        """Record the end of the job's process (``rc`` None: not our child, its exit code is unknown)."""
        d = self.root / job["id"]
        done, total = self._completed_epochs(d)
        complete = total is not None and done >= total and (d / "run" / "best" / "config.json").is_file()
        job["exit_code"] = rc
        job["ended"] = _now()
        self._procs.pop(job["id"], None)
        tested = not job.get("test") or (d / TEST_NAME).is_file()
        if job.get("stop_requested"):
            job["status"], job["reason"] = "stopped", f"stopped after {done} epoch(s)"
        elif complete and tested and rc in (0, None):
            job["status"], job["reason"] = "finished", ""
        elif rc is None:
            job["status"], job["reason"] = "failed", DIED
        elif rc < 0:
            job["status"], job["reason"] = "failed", f"killed by signal {-rc} ({DIED})"
        else:
            cause = cause_of(self.public(self.log(job["id"], lines=400)))
            job["status"], job["reason"] = "failed", f"exit code {rc}: {cause}" if cause else f"exit code {rc}"
        self._write(job)
        return job

    def resumable(self, job: dict) -> bool:
        """Whether Resume has something to continue: the job stopped or failed after saving a checkpoint."""
        return job.get("status") in ("stopped", "failed") and (self.root / job["id"] / "run" / "last" /
                                                                "config.json").is_file()

    def progress(self, job_id: str) -> dict:
        """The trainer's progress record (``run/progress.json``: phase, step of steps, loss, seconds per step,
        the warm-up's loss curve); {} before it writes one."""
        try:
            rec = json.loads((self.root / job_id / "run" / "progress.json").read_text())
        except (OSError, ValueError):
            return {}
        return rec if isinstance(rec, dict) else {}

    def test_result(self, job_id: str) -> dict | None:
        """The best checkpoint's test mAP and random embeddings' on the same queries (``{"map", "random",
        "per_attribute", "n_queries"}``), over the attributes the job trained (the mean over their queries);
        None before both were measured."""
        try:
            res = json.loads((self.root / job_id / TEST_NAME).read_text())
            rnd = json.loads((self.root / job_id / RANDOM_NAME).read_text())
            trained = (self._read(self.root / job_id).get("settings") or {}).get("attributes") or list(res["n_queries"])
            n = {a: int(res["n_queries"][a]) for a in trained if a in res["n_queries"]}

            def mean(r: dict) -> float:
                return sum(float(r["per_attribute"][a]) * k for a, k in n.items()) / max(1, sum(n.values()))

            return {"map": mean(res), "random": mean(rnd), "n_queries": n,
                    "per_attribute": {a: float(res["per_attribute"][a]) for a in n}}
        except (OSError, ValueError, KeyError, TypeError, JobError):
            return None

    @staticmethod
    def published_name(job: dict) -> str:
        """The readable name a published model goes by: ``asen fine-tuned on products12k (job 765b)``."""
        data = job.get("dataset_name") or Path(str(job.get("dataset", "data"))).name
        return f"{job['model']} fine-tuned on {data} (job {job['id'].rsplit('-', 1)[-1]})"

    def publish(self, job_id: str, owner=None) -> dict:
        """Make a finished job's best checkpoint a model of every visitor (the caller serves it under
        ``job["published"]["name"]``). Only its owner may publish it; publishing twice changes nothing."""
        if not self.enabled:
            raise JobError(PUBLISH_OFF)
        with self._lock:
            job = self.job_for(job_id, owner)
            if job["status"] != "finished":
                raise JobError(f"job {job['id']} has not finished (it is {job['status']}); only a finished job's "
                               "model can be published")
            if self.best_checkpoint(job["id"]) is None:
                raise JobError(f"job {job['id']} has no best checkpoint to publish")
            if not job.get("published"):
                job["published"] = {"name": self.published_name(job), "at": _now()}
                self._write(job)
            return job

    def published(self) -> list[dict]:
        """The finished jobs whose owners published their model, oldest first."""
        return [j for j in reversed(self.list()) if j.get("published") and self.best_checkpoint(j["id"])]

    def metrics(self, job_id: str) -> list[dict]:
        path = self.root / job_id / "run" / "metrics.jsonl"
        try:
            return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        except (OSError, ValueError):
            return []

    def log(self, job_id: str, lines: int = 40) -> str:
        return tail(self.root / job_id / LOG_NAME, lines)

    def best_checkpoint(self, job_id: str) -> Path | None:
        p = self.root / job_id / "run" / "best"
        return p if (p / "config.json").is_file() and (p / "model.safetensors").is_file() else None

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise JobError(TRAINING_OFF)


class JobManager(JobOptions, JobRecords):
    """Launch, watch, stop and resume training jobs under ``jobs_root``; datasets within ``data_roots``.

    ``home`` (the app passes its repository; default: the working folder) is where relative dataset paths
    start and the trainer runs, and what public names are relative to (``data/...``, ``../shared/data/...``).
    """

    def __init__(self, jobs_root: str | os.PathLike, data_roots: list[str | os.PathLike],
                 python: str = sys.executable, on_finished=None, enabled: bool | None = None,
                 home: str | os.PathLike | None = None, private: list[str | os.PathLike] = ()):
        self.root = Path(jobs_root)
        self.data_roots = [Path(r) for r in data_roots]
        # never inside the data roots, though a root may hold them (the cache holds jobs/, uploads/, exports/):
        # a path there is refused as one outside the roots, so no answer tells whether another's job exists
        self.private = [self.root, *(Path(p) for p in private)]
        self.home = Path(home).resolve() if home is not None else Path.cwd()
        self.enabled = training_enabled() if enabled is None else enabled
        self.python = python
        self.on_finished = on_finished  # callback(job dict) once a job finished (the app indexes its checkpoint)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._gpu = None
        # on a public Space (SPACE_ID set) the data roots are <data root N>, never data/ or ../shared/data
        self.hide_layout = bool(os.environ.get("SPACE_ID"))

    # -- actions -----------------------------------------------------------------------------------------
    def launch(self, model: str, dataset, preset: str = "demo", epochs=None, triplets_per_epoch=None,
               batch_size=None, warmup_steps=None, attributes=None, frozen_trunk: bool = False,
               model_config: str | dict | None = None, image_column=None, rows=None, owner=None) -> dict:
        """Start a training job owned by ``owner``; refused (JobError) when another one runs or an argument is
        wrong. On a CSV catalogue, ``attributes`` are the columns imported as attributes (all of them trained),
        ``image_column`` the image paths' column and ``rows`` (optional) how many of its first rows to import."""
        from profashion.models.base import available_models

        self._check_enabled()
        models = available_models()
        if model not in models:
            raise JobError(f"unknown model {model!r}; choose one of {', '.join(models)}")
        if preset not in self.presets():
            why = " (the paper presets need a GPU: none was found)" if preset == "paper" else ""
            raise JobError(f"preset {preset!r} is not offered here{why}; choose {', '.join(self.presets())}")
        ds = self.resolve_dataset(dataset)
        names = [str(a).strip() for a in (attributes.split(",") if isinstance(attributes, str) else attributes or [])
                 if str(a).strip()]
        settings: dict = {"model": model, "dataset": str(ds), "preset": preset}
        for name, value, lo in (("epochs", epochs, 1), ("triplets_per_epoch", triplets_per_epoch, 1),
                                ("batch_size", batch_size, 1), ("warmup_steps", warmup_steps, 0)):
            if value is None or value == "":
                continue
            settings[name] = _whole_number(name.replace("_", " "), value, lo)
        if names and ds.is_dir():
            settings["attributes"] = names
        if frozen_trunk:
            settings["frozen_trunk"] = True
        overrides = self._model_config(model_config)
        if overrides:
            settings["model_overrides"] = overrides
        try:  # the settings and the run's size, checked as the trainer will, before anything starts
            cfg = TrainConfig.from_json(settings)
            cfg.resolved()
        except ValueError as exc:
            raise JobError(str(exc)) from None
        csv_plan = self._csv_plan(ds, names, image_column, rows) if ds.is_file() else None
        with self._lock:
            self._busy(owner)
            job_id = f"{model}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
            d = self.root / job_id
            d.mkdir(parents=True)
            try:  # a CSV is imported into the job's folder; the dataset must be big enough to validate on
                data = self._import(ds, d, *csv_plan) if csv_plan else ds
                val_queries = self.check_validation(data, settings.get("attributes"))
                has_test = self._has_test(data)
            except (JobError, DatasetError, OSError) as exc:
                shutil.rmtree(d, ignore_errors=True)
                raise JobError(self.public(str(exc))) from None
            cfg.dataset = settings["dataset"] = str(data)
            cfg.out = str(d / "run")
            cfg.save(d / CONFIG_NAME)
            job = {"id": job_id, "model": model, "dataset": str(data), "source": str(ds), "preset": preset,
                   "settings": settings, "dataset_name": load_dataset(data).name, "val_queries": val_queries,
                   "test": has_test, "status": "queued", "reason": "", "pid": None, "created": _now(),
                   "started": None, "ended": None, "exit_code": None, "resumed": 0, "stop_requested": False,
                   "owner": owner_key(owner)}
            self._write(job)
            return self._start(job, resume=False)

    def _csv_plan(self, csv_path: Path, attributes: list[str], image_column, rows) -> tuple:
        """(attribute columns in the CSV's order, image column, rows or None) of a CSV launch, checked against the
        CSV's header: a column it lacks is refused in one sentence."""
        try:
            header = csv_header(csv_path)
        except DatasetError as exc:
            raise JobError(str(exc)) from None
        image_column = str(image_column or "").strip() or ("image" if "image" in header else "")
        if not image_column:
            raise JobError(f"choose the image column of {csv_path.name} (the column of image paths)")
        if not attributes:
            raise JobError(f"choose the attribute columns of {csv_path.name} to train on (its columns: "
                           + ", ".join(header) + ")")
        missing = [c for c in [image_column, *attributes] if c not in header]
        if missing:
            raise JobError(f"the CSV {csv_path.name} has no column {', '.join(map(repr, missing))}; its columns are "
                           + ", ".join(header))
        if image_column in attributes:
            raise JobError(f"the image column {image_column!r} cannot also be an attribute column")
        n = None if rows is None or rows == "" or rows == 0 else _whole_number("rows", rows, 1)
        return [c for c in header if c in attributes], image_column, n

    @staticmethod
    def _import(csv_path: Path, d: Path, attributes: list[str], image_column: str, rows: int | None) -> Path:
        """The CSV (its first ``rows`` rows) imported into the job's folder as a dataset named after it; its
        image paths are relative to the CSV's folder."""
        from profashion.data.csv_import import import_csv

        name = csv_path.parent.name if csv_path.stem.lower() in GENERIC_CSV_NAMES else csv_path.stem
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "catalogue"
        src = csv_path
        if rows:
            src = d / "catalogue.csv"
            _first_rows(csv_path, src, rows)
            name = f"{name}-{rows}"
        return import_csv(src, csv_path.parent, attributes, d / name, image_column=image_column,
                          eval_layout=CSV_EVAL_LAYOUT)

    def _model_config(self, model_config: str | dict | None) -> dict:
        """The model settings a job overrides (a JSON object, as text or parsed), a pretrained path confined."""
        if not model_config:
            return {}
        if isinstance(model_config, str):
            try:  # bounded before parsing: a config nested 100,000 deep is one sentence, not a RecursionError
                cfg = loads_json(model_config, max_bytes=MAX_MODEL_CONFIG_BYTES, what="the model config",
                                 fix='give a JSON object of model settings, e.g. {"embed_dim": 32}')
            except JSONLimitError as exc:
                raise JobError(str(exc)) from None
        else:
            cfg = model_config
        if not isinstance(cfg, dict):
            raise JobError("the model config must be a JSON object, e.g. {\"embed_dim\": 32}")
        if "pretrained" in cfg:
            cfg = {**cfg, "pretrained": self._pretrained(cfg["pretrained"])}
        return cfg

    def _command(self, job: dict, resume: bool) -> list[str]:
        """The job's process: train (``--resume``: from its last checkpoint), then, where the dataset has a test
        split with queries, the test mAP of its best checkpoint and of random embeddings, chained by ``sh``."""
        d = self.root / job["id"]
        cli = [self.python, "-m", "profashion.cli"]
        steps = [[*cli, "train", "--config", str(d / CONFIG_NAME), "--out", str(d / "run")]
                 + (["--resume"] if resume else [])]
        if job.get("test"):
            test = [*cli, "eval", "--dataset", str(job["dataset"]), "--split", "test", "--resamples", "200", "--quiet"]
            steps += [[*test, "--checkpoint", str(d / "run" / "best"), "--json", str(d / TEST_NAME)],
                      [*test, "--embeddings", "random", "--json", str(d / RANDOM_NAME)]]
        cmd = steps[0] if len(steps) == 1 else ["sh", "-c", " && ".join(shlex.join(step) for step in steps)]
        if shutil.which("nice"):  # the web process keeps the CPU it needs to answer while a job trains
            cmd = ["nice", "-n", str(JOB_NICENESS), *cmd]
        return cmd

    def _start(self, job: dict, resume: bool) -> dict:
        d = self.root / job["id"]
        cmd = self._command(job, resume)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(d / LOG_NAME, "ab") as log:
            log.write(f"[{_now()}] $ {shlex.join(cmd)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(cmd, cwd=str(self.home), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except OSError as exc:
                job.update(status="failed", reason=f"the trainer could not be started ({exc})", ended=_now())
                self._write(job)
                return job
        self._procs[job["id"]] = proc
        job.update(status="running", pid=proc.pid, started=_now(), ended=None, exit_code=None, reason="",
                   stop_requested=False)
        self._write(job)
        threading.Thread(target=self._watch, args=(job["id"], proc), daemon=True,
                         name=f"job-{job['id']}").start()
        return job

    def _watch(self, job_id: str, proc: subprocess.Popen) -> None:
        proc.wait()
        try:
            self.get(job_id)  # records the end (and calls on_finished)
        except JobError:
            pass

    def stop(self, job_id: str, owner=None) -> dict:
        """SIGTERM to the job's process group (SIGKILL after a grace period); the job becomes "stopped". Only
        its owner may stop it."""
        self._check_enabled()
        d = self._dir(job_id)
        with self._lock:
            job = self.job_for(job_id, owner)
            if job["status"] not in ACTIVE:
                raise JobError(f"job {job_id} is not running (it is {job['status']})")
            job["stop_requested"] = True
            self._write(job)
            pid = int(job["pid"])
            try:
                os.killpg(pid, signal.SIGTERM)
                os.killpg(pid, signal.SIGCONT)  # a paused (SIGSTOP) job only gets the SIGTERM once running
            except ProcessLookupError:
                pass
        proc = self._procs.get(job_id)
        deadline = time.time() + STOP_GRACE_S
        while time.time() < deadline:
            if (proc.poll() is not None) if proc is not None else not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc is not None:
                proc.wait(timeout=10)
        return self.get(d.name)

    def resume(self, job_id: str, owner=None) -> dict:
        """Continue a stopped or failed job from its last finished epoch; refused when none finished (nothing
        was saved: launch it again). Only its owner may resume it."""
        self._check_enabled()
        d = self._dir(job_id)
        with self._lock:
            job = self.job_for(job_id, owner)
            if job["status"] in ACTIVE:
                raise JobError(f"job {job_id} is still {job['status']}; stop it before resuming")
            if job["status"] == "finished":
                raise JobError(f"job {job_id} has finished; launch a new job to train more")
            resumable = (d / "run" / "last" / "config.json").is_file()
            if not resumable:
                raise JobError(f"job {job_id} has nothing to resume: it stopped before finishing an epoch, so no "
                               "checkpoint was saved; launch it again")
            self._busy(owner)
            if not (d / CONFIG_NAME).is_file():  # a job of an older version: its run's args.json is its config
                try:
                    read_config(d / "run" / "args.json")
                except (OSError, ValueError):
                    raise JobError(f"job {job_id} was launched by an older version and has no training "
                                   "configuration to resume from; launch a new job") from None
                shutil.copyfile(d / "run" / "args.json", d / CONFIG_NAME)
            job["resumed"] = int(job.get("resumed", 0)) + 1
            return self._start(job, resume=True)
