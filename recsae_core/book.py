"""``recsae book``: execute the book's chapters with papermill, then build the HTML with Jupyter Book 1.

Usage::

    recsae book [--profile smoke|default|paper] [--chapter NAME ...] [--dataset NAME ...]
                [--device cpu|cuda] [--output DIR] [--force] [--no-build] [--quiet]

What lives where (repository root = the book root):

* ``_config.yml`` — the Jupyter Book configuration (offline JavaScript, execution off).
* ``_toc.yml`` — the **default layout**: the intro, then for every chapter an entry
  ``chapters/<chapter>/index`` whose sections ``chapters/<chapter>/<dataset>`` are the per-dataset pages.
* ``book/<chapter>.ipynb`` — a chapter's source notebook (outputs cleared, one cell tagged ``parameters``
  that declares at least ``dataset``).
* ``book/profiles/<chapter>.yaml`` — the chapter's title, description, datasets and parameters::

      title: Datasets
      description: one paragraph of markdown shown on the chapter's index page
      datasets: [ml-100k, lastfm-2k]     # default pages, in order
      optional_datasets: [ml-1m]         # also accepted with --dataset (e.g. the official file, downloaded)
      sequential: true                   # optional: the chapter's model needs timestamps (checked)
      smoke:   {datasets: [ml-100k], params: {...}}   # seconds; used by the tests
      default:                                        # the README's CPU book
        params: {...}
        dataset_params: {ml-1m-prefix: {models: [sasrec]}}   # optional: one page's own overrides
        minutes: {ml-1m-prefix: 45, ml-100k: 9}       # optional: measured cold minutes on one core
      paper:   {params: {device: cuda, ...}}          # the papers' settings; suits a GPU

  Parameters are those of the profile section, updated with ``dataset_params[<dataset>]``; the runner adds
  ``dataset``. Every parameter must be declared in the notebook's ``parameters`` cell (checked before
  anything runs). ``minutes`` only orders the work: with ``--jobs N`` > 1 the pages expected to take longest
  start first (longest-processing-time-first, so a long page does not start last and leave a core idle);
  pages without an entry follow in the table of contents' order.
* ``book/*.md`` and images — plain pages (the intro), copied as they are.

What a run does:

1. **Plan.** Chapters: ``--chapter`` or every chapter of ``_toc.yml``. Datasets per chapter: the profile
   section's ``datasets`` (else the chapter's ``datasets``); with ``--dataset``, only those names, among the
   chapter's ``datasets`` + ``optional_datasets`` (a chapter that supports none of them is left out).
   Without ``--dataset``, the offline-only ML-1M variants (``ml-1m-prefix``, ``ml-1m-notime``) are replaced
   by the official ``ml-1m`` (downloaded) on a machine that lacks them, where the chapter accepts it.
2. **Execute** each (chapter, dataset) with papermill into
   ``<output>/_build/executed/<profile>/<chapter>/<dataset>.ipynb``, unless its inputs are unchanged: the hash
   of the source notebook, the parameters, the package's source (``recsae_core/**/*.py``; the runner's own
   files are represented by :data:`RUNNER_VERSION`), the data's identity (sha256 of the dataset's files, found
   as the loaders find them) and the Python/library versions is recorded beside the notebook in
   ``<dataset>.inputs.json``; an equal hash means the notebook is reused. papermill writes to a temporary file
   that is renamed over the notebook only on success, so a failure leaves the previous good notebook in place
   (the failed one is kept as ``<dataset>.failed.ipynb`` for inspection, outside the book); the run then stops,
   names the chapter, dataset and cell, and exits with status 1. Kernels inherit this process's environment,
   so ``RECSAE_DATA`` reaches them unchanged; their working directory is the book root. Executed notebooks
   show the parameters they ran with: papermill's ``injected-parameters`` cell is kept, collapsed
   (``hide-input``), and the source's ``parameters`` cell is removed from the page (``remove-cell``). The
   first ``# heading`` gets the dataset's title appended (``# Datasets: MovieLens-100k``).
3. **Build.** The runner assembles a Jupyter Book source tree in ``<output>/_build/src``: ``_config.yml``,
   a **generated** ``_toc.yml`` (the root one, keeping only this run's chapters and datasets, in the root
   file's order; datasets the root file does not list are appended) that holds this run's pages **and every
   page executed earlier for the same profile** (so ``--chapter X`` re-executes X only and the book stays
   whole), ``book/`` pages (the root page with the reproduction scoreboard of the built pages in place of
   its ``<!-- recsae:scoreboard -->`` line: :mod:`recsae_core.frontpage`), a generated
   ``chapters/<chapter>/index.md`` per chapter, and the executed notebooks. It then runs
   ``jupyter-book build <src> --path-output <output> --toc <src>/_toc.yml -W -n --keep-going``, so a
   ``--chapter``/``--dataset`` subset still builds with warnings as errors. The HTML lands in
   ``<output>/_build/html`` (default ``<output>`` = the repository root, i.e. ``_build/html``).

Executed notebooks are kept per profile, so switching between ``smoke`` and ``default`` does not re-execute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .utils import atomic_path, atomic_write_json, file_digest, sources_sha256, stable_hash

__all__ = [
    "PROFILES",
    "RUNNER_VERSION",
    "BookError",
    "ChapterFailed",
    "Job",
    "build_html",
    "check_cuda",
    "check_params",
    "input_hash",
    "main",
    "pages_to_build",
    "plan",
    "run_book",
    "ship_widget_fonts",
]

#: bump when the runner changes what it writes into executed notebooks (post-processing), to re-execute.
RUNNER_VERSION = 1
PROFILES = ("smoke", "default", "paper")
#: the repository root: the book root by default.
REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
#: files of the package that never run inside a chapter's kernel (left out of the source hash).
_NOT_IN_KERNEL = {"book.py", "cli.py", "frontpage.py"}
_CHAPTER_ENTRY = re.compile(r"^chapters/(?P<chapter>[A-Za-z0-9_\-]+)/index$")
_VERSIONED = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "seaborn",
    "plotly",
    "ipywidgets",
    "papermill",
)


class BookError(RuntimeError):
    """A problem with the book's configuration or arguments (message says what to fix)."""


class ChapterFailed(RuntimeError):
    """A chapter's cell raised; the message names the chapter, the dataset and the cell."""

    def __init__(self, job: Job, cell: int | None, source_line: str, error: str, failed_copy: Path) -> None:
        where = f"cell {cell} of {job.source.name}" if cell is not None else f"executing {job.source.name}"
        super().__init__(
            f"chapter {job.chapter!r}, dataset {job.dataset!r}: {where} failed"
            + (f" ({source_line!r})" if source_line else "")
            + f": {error}"
            + (f"\n  the failed notebook is kept at {failed_copy}" if failed_copy.exists() else "")
        )
        self.job, self.cell, self.error, self.failed_copy = job, cell, error, failed_copy


@dataclass
class Chapter:
    """A chapter as declared by its profile file."""

    name: str
    source: Path
    title: str
    description: str
    datasets: list[str]
    optional_datasets: list[str]
    sections: dict[str, dict[str, Any]]
    sequential: bool = False

    def profile_datasets(self, profile: str) -> list[str]:
        return list(self.sections.get(profile, {}).get("datasets") or self.datasets)

    def params(self, profile: str, dataset: str | None = None) -> dict[str, Any]:
        """The profile section's ``params``, updated with its ``dataset_params[dataset]`` when given."""
        sec = self.sections.get(profile, {})
        out = dict(sec.get("params") or {})
        if dataset is not None:
            out.update((sec.get("dataset_params") or {}).get(dataset) or {})
        return out

    def minutes(self, profile: str, dataset: str) -> float:
        """Expected cold minutes of a page on one core (the section's ``minutes``; 0 when not given)."""
        return float((self.sections.get(profile, {}).get("minutes") or {}).get(dataset, 0.0))


@dataclass
class Job:
    """One notebook to execute: a chapter on a dataset with a profile's parameters."""

    chapter: str
    dataset: str
    source: Path
    params: dict[str, Any]
    executed: Path
    minutes: float = 0.0
    """Expected cold minutes on one core (the profile's ``minutes``; orders the work, nothing else)."""
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return self.executed.with_suffix(".inputs.json")

    @property
    def failed(self) -> Path:
        return self.executed.with_suffix(".failed.ipynb")


# ----------------------------------------------------------------------------------------- configuration


#: keys a profile section (smoke / default / paper) may hold.
_SECTION_KEYS = frozenset({"datasets", "params", "dataset_params", "minutes"})


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BookError(f"{path} not found") from None
    except yaml.YAMLError as err:
        raise BookError(f"{path}: not valid YAML: {err}") from None


def toc_chapters(toc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(chapter, datasets listed as its sections) for every ``chapters/<name>/index`` entry, in toc order."""
    out = []
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        for entry in part.get("chapters", []):
            m = _CHAPTER_ENTRY.match(str(entry.get("file", "")))
            if m:
                chapter = m["chapter"]
                prefix = f"chapters/{chapter}/"
                datasets = [
                    str(s["file"])[len(prefix) :]
                    for s in entry.get("sections", [])
                    if str(s.get("file", "")).startswith(prefix)
                ]
                out.append((chapter, datasets))
    return out


def load_chapter(root: Path, name: str) -> Chapter:
    """Read ``book/profiles/<name>.yaml`` and check it names an existing source notebook."""
    path = root / "book" / "profiles" / f"{name}.yaml"
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise BookError(f"{path}: expected a mapping with title, datasets and smoke/default/paper sections")
    source = root / "book" / raw.get("notebook", f"{name}.ipynb")
    if not source.is_file():
        raise BookError(f"{path}: the chapter's source notebook {source} does not exist")
    datasets = [str(d) for d in raw.get("datasets") or []]
    if not datasets:
        raise BookError(f"{path}: 'datasets' must list the datasets the chapter runs on")
    sections = {}
    for prof in PROFILES:
        sec = raw.get(prof) or {}
        if not isinstance(sec, dict) or set(sec) - _SECTION_KEYS:
            raise BookError(
                f"{path}: section {prof!r} may only hold {', '.join(sorted(_SECTION_KEYS))}, got {sorted(sec)}"
            )
        if "dataset" in (sec.get("params") or {}):
            raise BookError(f"{path}: section {prof!r}: 'dataset' is set by the runner, not in params")
        per = sec.get("dataset_params") or {}
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            raise BookError(
                f"{path}: section {prof!r}: dataset_params must map a dataset to a mapping of parameters, "
                f"e.g. {{ml-1m-prefix: {{models: [sasrec]}}}}"
            )
        if any("dataset" in v for v in per.values()):
            raise BookError(
                f"{path}: section {prof!r}: 'dataset' is set by the runner, not in dataset_params"
            )
        minutes = sec.get("minutes") or {}
        if not isinstance(minutes, dict) or not all(
            _number_above(v, 0, strict=False) for v in minutes.values()
        ):
            raise BookError(
                f"{path}: section {prof!r}: minutes must map a dataset to a number >= 0 (expected cold minutes "
                f"on one core), got {minutes!r}"
            )
        sections[prof] = sec
    optional = [str(d) for d in raw.get("optional_datasets") or []]
    for prof, sec in sections.items():
        for key in ("datasets", "dataset_params", "minutes"):
            extra = sorted(set(sec.get(key) or []) - set(datasets) - set(optional))
            if extra:
                what = "lists" if key == "datasets" else f"has {key} for"
                raise BookError(
                    f"{path}: section {prof!r} {what} {extra}, not in datasets or optional_datasets"
                )
    return Chapter(
        name=name,
        source=source,
        title=str(raw.get("title", name.replace("_", " ").capitalize())),
        description=str(raw.get("description", "")).strip(),
        datasets=datasets,
        optional_datasets=optional,
        sections=sections,
        sequential=bool(raw.get("sequential", False)),
    )


def _declared_parameters(source: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(source)))


# ------------------------------------------------------------------------------------------------ hashing


def package_source_hash() -> str:
    """sha256 over the package's ``.py`` files that run in kernels (paths and contents)."""
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    return sources_sha256(
        PACKAGE_DIR, [p for p in paths if p.relative_to(PACKAGE_DIR).as_posix() not in _NOT_IN_KERNEL]
    )


_DATA_IDENTITY: dict[str, Any] = {}


def data_identity(dataset: str) -> Any:
    """What identifies ``dataset``'s data: sha256 of its files where the loaders would find them.

    Unregistered names (a test's toy dataset) are identified by their name only; a registered dataset that is
    not found is recorded as such (its chapter will then fail with the loader's message).
    """
    if dataset in _DATA_IDENTITY:
        return _DATA_IDENTITY[dataset]
    try:
        from .data.registry import DATASETS, locate
    except ImportError:  # pragma: no cover - the registry is part of the package
        return {"name": dataset}
    if dataset not in DATASETS:
        ident: Any = {"name": dataset, "registered": False}
    else:
        folder, _how = locate(dataset)
        if folder is None:
            ident = {"name": dataset, "found": False}
        else:
            ident = {f: file_digest(folder / f) for f in sorted(DATASETS[dataset].files)}
    _DATA_IDENTITY[dataset] = ident
    return ident


def _environment() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    return versions


def input_hash(job: Job) -> tuple[str, dict[str, Any]]:
    """The hash that decides whether ``job`` must run again, and the parts it is made of."""
    parts = {
        "runner": RUNNER_VERSION,
        "notebook": file_digest(job.source),
        "params": job.params,
        "package": package_source_hash(),
        "data": data_identity(job.dataset),
        "environment": _environment(),
    }
    return stable_hash(parts, length=32), parts


def _recorded_hash(job: Job) -> str | None:
    if not (job.executed.is_file() and job.sidecar.is_file()):
        return None
    try:
        return json.loads(job.sidecar.read_text())["hash"]
    except (ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------------------------ planning


def plan(
    root: Path,
    profile: str,
    chapters: Sequence[str] | None,
    datasets: Sequence[str] | None,
    output: Path,
    device: str | None = None,
) -> tuple[list[Job], dict[str, Any], dict[str, Chapter]]:
    """The jobs of this run, the root toc, and the chapters by name (see the module docstring).

    ``device`` overrides the profile's ``device`` parameter in every chapter that declares one (e.g. the
    ``paper`` profile's settings on a CPU). Every job's parameters are checked (:func:`check_params`);
    :func:`run_book` then checks that a requested CUDA device exists (:func:`check_cuda`), all before
    anything executes.
    """
    if device is not None:
        _check_device_name(device, "--device")
    if profile not in PROFILES:
        raise BookError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    toc = _read_yaml(root / "_toc.yml")
    known = [c for c, _ in toc_chapters(toc)]
    if chapters:
        unknown = [c for c in chapters if c not in known]
        if unknown:
            raise BookError(f"unknown chapter(s) {unknown}; _toc.yml has {', '.join(known)}")
        selected = [c for c in known if c in set(chapters)]
    else:
        selected = known
    loaded = {name: load_chapter(root, name) for name in selected}
    jobs: list[Job] = []
    for name in selected:
        ch = loaded[name]
        if datasets:
            allowed = ch.datasets + ch.optional_datasets
            names = [d for d in datasets if d in allowed]
        else:
            names = _substitute_unavailable(ch.profile_datasets(profile), ch.datasets + ch.optional_datasets)
        declared = _declared_parameters(ch.source)
        for ds in names:
            params = ch.params(profile, ds)
            if device is not None and "device" in declared:
                params["device"] = device
            check_params(ch, profile, params, [ds])
            undeclared = sorted(set(params) - declared) + ([] if "dataset" in declared else ["dataset"])
            if undeclared:
                raise BookError(
                    f"chapter {name!r}: parameter(s) {undeclared} of profile {profile!r} are not declared in "
                    f"the 'parameters' cell of {ch.source} (declared: {sorted(declared)})"
                )
            executed = output / "_build" / "executed" / profile / name / f"{ds}.ipynb"
            jobs.append(
                Job(name, ds, ch.source, {**params, "dataset": ds}, executed, ch.minutes(profile, ds))
            )
    if not jobs:
        raise BookError(
            f"nothing to run: chapters {selected} support none of the datasets {list(datasets or [])}"
        )
    return jobs, toc, loaded


# ------------------------------------------------------------------------------------ parameter checks

#: parameters whose value(s) must be numbers > 0 (one number or a list), by name or name suffix.
_POSITIVE = ("epochs", "steps", "batch_size", "lr", "dict_size", "dict_sizes", "n_latents", "k", "ks")
#: parameters whose value(s) must be numbers >= 0, by name suffix (loss coefficients).
_NON_NEGATIVE_SUFFIX = ("_coeff", "_coeffs", "_weight", "_weights", "beta", "betas")


def _check_device_name(value: Any, where: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise BookError(f"{where}: device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")


def _number_above(v: Any, bound: float, *, strict: bool) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return v > bound if strict else v >= bound


def _numbers(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _model_sites(name: str, params: dict[str, Any]) -> list[str]:
    """The sites of model ``name`` built with the profile's config overrides (a tiny instance: 2 users, 3 items)."""
    from recsae_core.models.registry import MODELS, make_config

    overrides = (params.get("configs") or {}).get(name) or {}
    try:
        config = make_config(name, None, **overrides)
    except (TypeError, ValueError) as e:
        raise BookError(f"parameter 'configs' of model {name!r}: {e}") from None
    return list(MODELS[name].model_cls(2, 3, config).sites)


def check_params(ch: Chapter, profile: str, params: dict[str, Any], datasets: Sequence[str]) -> None:
    """Stop before executing anything when a profile's parameters cannot work, naming the chapter, the
    profile and the parameter.

    Checked by name, so every chapter gets the same rules: ``device`` (cpu / cuda / cuda:N); SAE
    architectures (``architecture``, ``architectures``, ``*_architecture``) must be registered; models
    (``model``, ``models``) must be known, and ``site``/``sites`` must be a site of the chapter's model(s);
    counts, sizes and rates (``epochs``, ``steps``, ``lr``, ``dict_size(s)``, ``k``, ...) must be > 0; loss
    coefficients (``*_coeff(s)``, ``*_weight(s)``, ``beta(s)``) must be >= 0; ``null`` (``None``) passes both,
    for "no cap" / "off". A chapter whose profile file
    says ``sequential: true`` needs datasets with timestamps.
    """
    from recsae_core.data.registry import DATASETS
    from recsae_core.models.registry import MODELS
    from recsae_core.sae.registry import available_architectures

    def fail(name: str, why: str) -> BookError:
        return BookError(f"chapter {ch.name!r}, profile {profile!r}, parameter {name!r}: {why}")

    for name, value in params.items():
        if name == "device":
            try:
                _check_device_name(value, "device")
            except BookError as e:
                raise fail(name, str(e)) from None
        elif name in ("architecture", "architectures") or name.endswith("_architecture"):
            known = available_architectures()
            bad = [v for v in _numbers(value) if v not in known]
            if bad:
                raise fail(name, f"unknown SAE architecture(s) {bad}; registered: {', '.join(known)}")
        elif name in ("model", "models"):
            bad = [v for v in _numbers(value) if v not in MODELS]
            if bad:
                raise fail(name, f"unknown model(s) {bad}; known: {', '.join(sorted(MODELS))}")
        elif name in _POSITIVE or name.endswith(("_epochs", "_steps", "_lr", "_batch_size")):
            bad = [v for v in _numbers(value) if v is not None and not _number_above(v, 0, strict=True)]
            if bad:
                raise fail(name, f"must be a number > 0 (or a list of them, or null for none), got {value!r}")
        elif name.endswith(_NON_NEGATIVE_SUFFIX):
            bad = [v for v in _numbers(value) if v is not None and not _number_above(v, 0, strict=False)]
            if bad:
                raise fail(
                    name, f"must be a number >= 0 (or a list of them, or null for none), got {value!r}"
                )
    sites = params.get("site", params.get("sites"))
    models = params.get("model", params.get("models"))
    if sites is not None and models is not None:
        offered = {s for m in _numbers(models) if m in MODELS for s in _model_sites(m, params)}
        bad = [s for s in _numbers(sites) if s not in offered]
        if bad:
            which = "site" if "site" in params else "sites"
            raise fail(which, f"{bad} is not a site of {models}; their sites: {', '.join(sorted(offered))}")
    if ch.sequential:
        untimed = [d for d in datasets if d in DATASETS and not DATASETS[d].timestamps]
        if untimed:
            raise BookError(
                f"chapter {ch.name!r}, profile {profile!r}: datasets {untimed} have no timestamps, and this "
                "chapter's sequential model needs them (use e.g. 'ml-1m-prefix' instead of 'ml-1m-notime')"
            )


def check_cuda(jobs: Sequence[Job], profile: str) -> None:
    """Raise :class:`BookError` when a job asks for ``device=cuda`` and torch sees no GPU (says how to fix)."""
    wants = sorted({j.chapter for j in jobs if str(j.params.get("device", "cpu")).startswith("cuda")})
    if not wants:
        return
    import torch

    if not torch.cuda.is_available():
        raise BookError(
            f"profile {profile!r} runs chapter(s) {', '.join(wants)} with device=cuda, but torch sees no CUDA "
            "GPU on this machine. Add `--device cpu` to run these settings on the CPU (much slower), or use "
            "`--profile default`, the CPU book."
        )


def _substitute_unavailable(names: list[str], allowed: list[str]) -> list[str]:
    """Swap a profile's offline-only ML-1M variants for the official ``ml-1m`` where they are not at hand.

    ``ml-1m-prefix`` and ``ml-1m-notime`` exist only in a data directory (built from public copies; they have
    no archive to download). On a machine without them, a chapter that accepts ``ml-1m`` runs on the official
    file instead, which the loader downloads and checks.
    """
    from .data.registry import DATASETS, locate

    out: list[str] = []
    for d in names:
        spec = DATASETS.get(d)
        if spec is not None and spec.url is None and "ml-1m" in allowed and locate(d)[0] is None:
            d = "ml-1m"
        if d not in out:
            out.append(d)
    return out


# ----------------------------------------------------------------------------------------------- executing


def _dataset_title(dataset: str) -> str:
    try:
        from .data.registry import DATASETS

        return DATASETS[dataset].title if dataset in DATASETS else dataset
    except ImportError:  # pragma: no cover
        return dataset


def postprocess(nb: Any, dataset: str) -> Any:
    """Tag the parameter cells for the page and put the dataset in the title (in place; returns ``nb``)."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    title = _dataset_title(dataset)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.split("\n")
            for i, line in enumerate(lines):
                if line.startswith("# ") and not line.rstrip().endswith(f": {title}"):
                    lines[i] = f"{line.rstrip()}: {title}"
                    cell.source = "\n".join(lines)
                    return nb
            break
    return nb


COST_TAG = "recsae-cost"


def add_cost_footer(nb: Any, seconds: float, job: Job) -> Any:
    """Append what the page cost to execute (issue 13: "every page shows what it cost"): wall seconds, the
    device, the machine's CPU cores and the date (in place; returns ``nb``). Models and SAEs loaded
    from the artifact cache cost nothing here, so a page's first run is the expensive one."""
    import nbformat

    device = job.params.get("device", "cpu")
    cores = os.cpu_count() or "?"
    minutes = f" ({seconds / 60:.1f} min)" if seconds >= 90 else ""
    cell = nbformat.v4.new_markdown_cell(
        f"*Executed by `recsae book` in {seconds:.0f} s{minutes} on {device} ({cores} CPU cores), "
        f"{time.strftime('%Y-%m-%d')}; trained models and SAEs found in the artifact cache were loaded, not "
        "trained.*"
    )
    cell.metadata["tags"] = [COST_TAG]
    nb.cells.append(cell)
    return nb


def _source_cell(nb_out: Any, cell_index: int) -> tuple[int, str]:
    """1-based index of a failing cell in the *source* notebook (papermill inserted one cell) and its first line."""
    cells = nb_out.cells
    injected = next(
        (i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])), None
    )
    src_index = cell_index - (1 if injected is not None and cell_index > injected else 0)
    first = cells[cell_index].source.strip().split("\n")[0] if 0 <= cell_index < len(cells) else ""
    return src_index + 1, first[:80]


@contextlib.contextmanager
def ticking_bars(interval: float = 5.0) -> Iterator[None]:
    """Redraw every live tqdm bar each ``interval`` seconds, so that papermill's cell bar keeps showing the
    elapsed time while one long cell (e.g. training SASRec+ for an hour) runs; tqdm itself only redraws when
    a cell completes."""
    from tqdm import tqdm

    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            try:
                bars = list(getattr(tqdm, "_instances", ()))
            except RuntimeError:  # the set changed while copying: skip this tick
                continue
            for bar in bars:
                if not bar.disable:
                    bar.refresh()

    thread = threading.Thread(target=tick, name="recsae-book-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernel talks over local IPC sockets instead of TCP on localhost: nothing to
    eavesdrop on, and the kernel prints no "running over TCP without encryption" warning into the book's
    output.

    Its shutdown also skips jupyter_client's SIGINT before the shutdown request: papermill shuts a kernel down
    once it is idle, and the interrupt only made ipykernel log "KeyboardInterrupt caught in kernel" into the
    book's output, which reads like a failure. A kernel that does not stop is still terminated, then killed.
    """
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            # a socket path of its own: jupyter_client's default ("kernel-ipc" in the working folder) is shared
            # by every kernel a process starts, so two notebooks run side by side crossed their messages
            # ("Invalid Signature")
            kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), f"recsae-kernel-{uuid.uuid4().hex}"))
            super().__init__(**kwargs)

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:  # set by shutdown_kernel before its interrupt
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


def execute(job: Job, root: Path, *, progress: bool = True) -> float:
    """Run ``job`` with papermill (temp file, renamed on success); return the seconds it took.

    Raises :class:`ChapterFailed` when a cell raises; the previous good notebook stays untouched.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    job.executed.parent.mkdir(parents=True, exist_ok=True)
    job.failed.unlink(missing_ok=True)
    with atomic_path(job.executed) as tmp:
        tmp_nb = tmp.with_suffix(".ipynb")  # papermill wants an .ipynb suffix
        try:
            with ticking_bars() if progress else contextlib.nullcontext():
                papermill.execute_notebook(
                    str(job.source),
                    str(tmp_nb),
                    parameters=job.params,
                    kernel_name="python3",
                    progress_bar=progress,
                    cwd=str(root),
                    request_save_on_cell_execute=False,
                    kernel_manager_class=_ipc_kernel_manager(),
                )
        except PapermillExecutionError as err:
            nb_out = nbformat.read(tmp_nb, as_version=4)
            shutil.move(tmp_nb, job.failed)
            cell, line = _source_cell(nb_out, err.cell_index)
            raise ChapterFailed(job, cell, line, f"{err.ename}: {err.evalue}", job.failed) from None
        except Exception as err:  # the kernel died, timed out or could not start
            if tmp_nb.exists():
                shutil.move(tmp_nb, job.failed)
            raise ChapterFailed(job, None, "", f"{type(err).__name__}: {err}", job.failed) from err
        except BaseException:  # KeyboardInterrupt: leave nothing behind
            tmp_nb.unlink(missing_ok=True)
            raise
        nb = postprocess(nbformat.read(tmp_nb, as_version=4), job.dataset)
        add_cost_footer(nb, time.perf_counter() - t0, job)
        nbformat.write(nb, tmp)
        tmp_nb.unlink()
    seconds = time.perf_counter() - t0
    atomic_write_json(
        job.sidecar, {"hash": job.parts["hash"], "inputs": job.parts["inputs"], "seconds": seconds}
    )
    return seconds


# ------------------------------------------------------------------------------------------------ building


def pages_to_build(
    root: Path,
    profile: str,
    toc: dict[str, Any],
    jobs: Sequence[Job],
    loaded: dict[str, Chapter],
    output: Path,
) -> list[Job]:
    """This run's jobs plus every page already executed for ``profile`` (chapters of the root toc), so that
    ``--chapter X`` or ``--dataset Y`` re-executes only what it names and the book keeps its other pages.

    Fills ``loaded`` with the chapters it adds. Pages are those whose executed notebook exists under
    ``<output>/_build/executed/<profile>/<chapter>/<dataset>.ipynb``.
    """
    out = list(jobs)
    have = {(j.chapter, j.dataset) for j in jobs}
    base = output / "_build" / "executed" / profile
    for name, _sections in toc_chapters(toc):
        folder = base / name
        if not folder.is_dir():
            continue
        for nb in sorted(folder.glob("*.ipynb")):
            if nb.name.endswith(".failed.ipynb") or (name, nb.stem) in have:
                continue
            if name not in loaded:
                loaded[name] = load_chapter(root, name)
            out.append(Job(name, nb.stem, loaded[name].source, {}, nb))
            have.add((name, nb.stem))
    return out


def generated_toc(toc: dict[str, Any], jobs: Sequence[Job]) -> dict[str, Any]:
    """The root toc with this run's dataset pages (order of the root file, extras appended).

    Every chapter's index page stays, with or without executed pages, so that a link from one chapter to
    another (``{doc}`/chapters/p1_sequential/index```) resolves in any build, ``--chapter`` subsets included.
    """
    run: dict[str, list[str]] = {}
    for job in jobs:
        run.setdefault(job.chapter, []).append(job.dataset)
    out = {k: v for k, v in toc.items() if k not in ("parts", "chapters")}
    parts_in = toc.get("parts")
    parts_out = []
    for part in parts_in if parts_in is not None else [{"chapters": toc.get("chapters", [])}]:
        chapters = []
        for entry in part.get("chapters", []):
            m = _CHAPTER_ENTRY.match(str(entry.get("file", "")))
            if not m:
                chapters.append(entry)
                continue
            name = m["chapter"]
            ran = run.get(name, [])
            listed = [str(s["file"]).split("/")[-1] for s in entry.get("sections", [])]
            order = [d for d in listed if d in ran] + [d for d in ran if d not in listed]
            new = {k: v for k, v in entry.items() if k != "sections"}
            if order:
                new["sections"] = [{"file": f"chapters/{name}/{d}"} for d in order]
            chapters.append(new)
        if chapters:
            parts_out.append({**{k: v for k, v in part.items() if k != "chapters"}, "chapters": chapters})
    if parts_in is not None:
        out["parts"] = parts_out
    else:
        out["chapters"] = parts_out[0]["chapters"] if parts_out else []
    return out


def _sync_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless identical (keeps mtimes, so Sphinx rebuilds only what changed)."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _index_page(ch: Chapter, executed: bool = True) -> str:
    if not executed:
        return (
            f"# {ch.title}\n\n{ch.description}\n\n```{{note}}\nThis chapter has not been executed in this build; "
            f"run `recsae book --chapter {ch.name}` to add its pages.\n```\n"
        )
    return f"# {ch.title}\n\n{ch.description}\n\nOne page per dataset:\n\n```{{tableofcontents}}\n```\n"


def _with_scoreboard(
    text: str, root_page: str, toc: dict[str, Any], jobs: Sequence[Job], profile: str
) -> str:
    """``text`` (the root page) with its :data:`recsae_core.frontpage.MARKER` line replaced by the
    reproduction scoreboard of ``jobs``' executed pages (claims read from the notebooks, so a page skipped as
    unchanged keeps its claims); ``text`` unchanged when it has no marker."""
    from . import frontpage, scoreboard

    if frontpage.MARKER not in text:
        return text
    listed = toc_chapters(toc)
    names = [c for c, _ in listed]
    sections = dict(listed)
    specs = [s for s in scoreboard.all_specs() if s.chapter in names]
    pages = {(j.chapter, j.dataset): frontpage.read_claims(j.executed) for j in jobs if j.chapter in names}

    def rank(page: tuple[str, str]) -> tuple[int, int, str]:
        ds = sections[page[0]]
        return names.index(page[0]), ds.index(page[1]) if page[1] in ds else len(ds), page[1]

    rows = frontpage.scoreboard_rows(specs, pages, sorted(pages, key=rank))
    board = frontpage.render_html(rows, prefix="../" * root_page.count("/"), profile=profile)
    return text.replace(frontpage.MARKER, board.rstrip("\n"))


def assemble_source(
    root: Path,
    output: Path,
    toc: dict[str, Any],
    jobs: Sequence[Job],
    chapters: dict[str, Chapter],
    profile: str = "",
) -> Path:
    """Lay out the Jupyter Book source tree in ``<output>/_build/src``; return it.

    The root page (``book/intro.md``) gets the reproduction scoreboard of ``jobs``' pages in place of its
    :data:`recsae_core.frontpage.MARKER` line (``profile`` is named above the table).
    """
    src = output / "_build" / "src"
    vendor = root / "book" / "_vendor"
    if not (vendor / "html-manager" / "embed-amd.js").is_file():
        raise BookError(f"{vendor} is incomplete: run `npm ci && python scripts/vendor_js.py` first")
    wanted: set[Path] = set()
    # configuration: the root _config.yml and the generated toc; a new toc means a clean HTML build
    new_toc = yaml.safe_dump(generated_toc(toc, jobs), sort_keys=False)
    toc_path = src / "_toc.yml"
    if toc_path.is_file() and toc_path.read_text(encoding="utf-8") != new_toc:
        for stale in ("html", ".doctrees", "jupyter_execute"):
            shutil.rmtree(output / "_build" / stale, ignore_errors=True)
    _write_if_changed(toc_path, new_toc)
    wanted.add(toc_path)
    _sync_file(root / "_config.yml", src / "_config.yml")
    wanted.add(src / "_config.yml")
    # plain pages and images from book/ (not the chapter sources, profiles or the vendored JS)
    book = root / "book"
    for path in sorted(book.rglob("*")):
        rel = path.relative_to(book)
        if (
            not path.is_file()
            or rel.parts[0] in {"_vendor", "profiles"}
            or ".ipynb_checkpoints" in rel.parts
            or path.suffix == ".ipynb"
        ):
            continue
        if path.suffix == ".md" and f"book/{rel.with_suffix('').as_posix()}" == str(toc.get("root", "")):
            page = path.read_text(encoding="utf-8")
            _write_if_changed(
                src / "book" / rel, _with_scoreboard(page, str(toc["root"]), toc, jobs, profile)
            )
        else:
            _sync_file(path, src / "book" / rel)
        wanted.add(src / "book" / rel)
    link = src / "book" / "_vendor"
    if not link.is_symlink() or link.resolve() != vendor.resolve():
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(vendor.resolve(), target_is_directory=True)
    # chapters: index pages and executed notebooks
    executed = {job.chapter for job in jobs}
    for name, _sections in toc_chapters(toc):  # every chapter's index page (see generated_toc)
        if name not in chapters:
            chapters[name] = load_chapter(root, name)
        index = src / "chapters" / name / "index.md"
        _write_if_changed(index, _index_page(chapters[name], executed=name in executed))
        wanted.add(index)
    for job in jobs:
        dst = src / "chapters" / job.chapter / f"{job.dataset}.ipynb"
        _sync_file(job.executed, dst)
        wanted.add(dst)
    # remove what this run does not contain
    for path in sorted(src.rglob("*"), reverse=True):
        if path == link or link in path.parents:
            continue
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return src


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BookError("jupyter-book is not installed: pip install -e '.[book]'")


def build_html(src: Path, output: Path) -> Path:
    """``jupyter-book build`` with warnings as errors; returns ``<output>/_build/html``."""
    cmd = [
        *_jupyter_book(),
        "build",
        str(src),
        "--path-output",
        str(output),
        "--toc",
        str(src / "_toc.yml"),
        "--config",
        str(src / "_config.yml"),
        "-W",
        "-n",
        "--keep-going",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = proc.stdout + proc.stderr
    (output / "_build").mkdir(parents=True, exist_ok=True)
    (output / "_build" / "build.log").write_text(log, encoding="utf-8")
    if proc.returncode != 0:
        warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        raise BookError(
            "jupyter-book build failed (warnings are errors):\n  "
            + "\n  ".join(warnings[-30:] or log.splitlines()[-30:])
            + f"\n  full log: {output / '_build' / 'build.log'}"
        )
    html = output / "_build" / "html"
    ship_widget_fonts(html)
    return html


def ship_widget_fonts(html: Path) -> list[Path]:
    """Put the widget manager's icon fonts where its pages ask for them; return the folders written.

    ``embed-amd.js`` holds two webpack bundles whose public path is the URI of the require.js module they were
    loaded as, relative to the page: ``@jupyter-widgets/html-manager/dist/...`` and ``@jupyter-widgets/...``.
    Their font-awesome CSS therefore asks for ``<page folder>/@jupyter-widgets/html-manager/dist/<hash>.woff2``
    and ``<page folder>/@jupyter-widgets/<hash>.woff2`` (404 without this; browsers then try ``.woff`` and
    ``.ttf``, 404 too). Every folder with a page that embeds the manager gets the ``.woff2`` files (168 KB
    each time), which every current browser takes first.
    """
    fonts = sorted((html / "_static" / "html-manager").glob("*.woff2"))
    written = []
    folders = {page.parent for page in html.rglob("*.html") if "embed-amd.js" in page.read_text("utf-8")}
    for folder in sorted(folders):
        for sub in _WIDGET_FONT_DIRS:
            dest = folder / sub
            dest.mkdir(parents=True, exist_ok=True)
            for font in fonts:
                if not (dest / font.name).is_file():
                    shutil.copy2(font, dest / font.name)
            written.append(dest)
    return written


#: where the widget manager's bundles look for their fonts, relative to the page (see ship_widget_fonts).
_WIDGET_FONT_DIRS = ("@jupyter-widgets/html-manager/dist", "@jupyter-widgets")


# --------------------------------------------------------------------------------------------------- driver


def run_book(
    *,
    root: Path = REPO_ROOT,
    profile: str = "default",
    chapters: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    output: Path | None = None,
    force: bool = False,
    build: bool = True,
    progress: bool = True,
    device: str | None = None,
    jobs_at_once: int = 1,
) -> dict[str, Any]:
    """Execute the planned chapters (skipping unchanged ones) and build the HTML.

    ``jobs_at_once`` > 1 runs that many notebooks side by side (each kernel gets ``cpu_count // jobs_at_once``
    OpenMP threads unless ``OMP_NUM_THREADS`` is set). Pages that need the same model or SAE take turns on it
    (:func:`recsae_core.cache.key_lock`): one trains, the other waits and loads it. A failure stops new
    notebooks from starting; the ones running finish, then the first failure is raised.

    Returns a summary: ``executed`` and ``skipped`` as ``(chapter, dataset)`` lists, ``seconds`` per executed
    notebook, ``wall_seconds`` of the execution phase, and ``html`` (the folder, or ``None`` with
    ``build=False``). Raises :class:`ChapterFailed` or :class:`BookError`.
    """
    if isinstance(jobs_at_once, bool) or not isinstance(jobs_at_once, int) or jobs_at_once < 1:
        raise BookError(f"jobs_at_once must be an int >= 1, got {jobs_at_once!r}")
    root = Path(root).resolve()
    output = Path(output).resolve() if output is not None else root
    jobs, toc, loaded = plan(root, profile, chapters, datasets, output, device=device)
    check_cuda(jobs, profile)  # before anything executes

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    summary: dict[str, Any] = {"executed": [], "skipped": [], "seconds": {}, "html": None}
    at_once = f", {jobs_at_once} at once" if jobs_at_once > 1 else ""
    say(f"recsae book: profile {profile!r}, {len(jobs)} notebook(s){at_once}, output {output / '_build'}")
    pending: list[tuple[str, Job]] = []
    for i, job in enumerate(jobs, 1):
        digest, parts = input_hash(job)
        job.parts = {"hash": digest, "inputs": parts}
        tag = f"[{i}/{len(jobs)}] {job.chapter} / {job.dataset}"
        if not force and _recorded_hash(job) == digest:
            say(f"{tag}: unchanged, skipped")
            summary["skipped"].append((job.chapter, job.dataset))
        else:
            pending.append((tag, job))

    def run_one(tag: str, job: Job, bars: bool) -> None:
        say(f"{tag}: executing {job.source.relative_to(root)} ...")
        seconds = execute(job, root, progress=bars)
        say(f"{tag}: done in {seconds:.1f} s")
        summary["executed"].append((job.chapter, job.dataset))
        summary["seconds"][f"{job.chapter}/{job.dataset}"] = seconds

    t_exec = time.perf_counter()
    if jobs_at_once == 1 or len(pending) <= 1:
        for tag, job in pending:
            run_one(tag, job, progress)
    else:
        # longest expected first (stable: pages without an estimate keep the toc order after them)
        _run_side_by_side(sorted(pending, key=lambda p: -p[1].minutes), run_one, jobs_at_once)
        order = {(j.chapter, j.dataset): i for i, (_, j) in enumerate(pending)}
        summary["executed"].sort(key=order.__getitem__)
    summary["wall_seconds"] = time.perf_counter() - t_exec
    if build:
        t0 = time.perf_counter()
        pages = pages_to_build(root, profile, toc, jobs, loaded, output)
        kept = len(pages) - len(jobs)
        say(
            "building the HTML (jupyter-book, warnings as errors)"
            + (f", with {kept} page(s) executed earlier for profile {profile!r}" if kept else "")
            + " ..."
        )
        src = assemble_source(root, output, toc, pages, loaded, profile=profile)
        html = build_html(src, output)
        summary["html"] = html
        summary["build_seconds"] = time.perf_counter() - t0
        say(f"built in {summary['build_seconds']:.1f} s. The book is at {html / 'index.html'}")
    return summary


def _run_side_by_side(pending: list[tuple[str, Job]], run_one: Any, n: int) -> None:
    """Run ``run_one(tag, job, False)`` for the pending jobs, ``n`` at once, in order of submission (cell
    progress bars off: interleaved bars are unreadable). Kernels inherit ``OMP_NUM_THREADS`` = cores // n
    when it is not set, so ``n`` kernels do not fight over the cores."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    threads = str(max(1, (os.cpu_count() or 1) // n))
    old = os.environ.get("OMP_NUM_THREADS")
    if old is None:
        os.environ["OMP_NUM_THREADS"] = threads
    stop = threading.Event()

    def guarded(tag: str, job: Job) -> None:
        if not stop.is_set():
            try:
                run_one(tag, job, False)
            except BaseException:
                stop.set()  # no new notebook starts; the running ones finish
                raise

    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="recsae-book") as pool:
            futures = [pool.submit(guarded, tag, job) for tag, job in pending]
            wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:  # the first failure in submission order
            if f.exception() is not None:
                raise f.exception()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsae book",
        description="Execute the book's chapters with papermill (skipping unchanged ones) and build the HTML.",
    )
    p.add_argument(
        "--profile",
        default="default",
        choices=PROFILES,
        help="parameter set: smoke (seconds, tests), default (CPU book), paper (papers' settings, GPU)",
    )
    p.add_argument("--chapter", nargs="+", metavar="NAME", help="only these chapters (names as in _toc.yml)")
    p.add_argument(
        "--dataset", nargs="+", metavar="NAME", help="only these datasets (e.g. ml-100k lastfm-2k)"
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder that receives _build/ (default: the repository root)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="override the profile's device (cpu, cuda, cuda:N), e.g. `--profile paper --device cpu` runs the "
        "papers' settings on a machine without a GPU",
    )
    p.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="notebooks executed side by side (default 1; 2 keeps both cores of a 2-core machine busy)",
    )
    p.add_argument("--force", action="store_true", help="re-execute even when the inputs are unchanged")
    p.add_argument("--no-build", action="store_true", help="execute only; do not build the HTML")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``recsae book``; returns the exit status (0 ok, 1 a chapter or the build failed, 2 usage)."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        run_book(
            root=args.root,
            profile=args.profile,
            chapters=args.chapter,
            datasets=args.dataset,
            output=args.output,
            force=args.force,
            build=not args.no_build,
            progress=not args.quiet,
            device=args.device,
            jobs_at_once=args.jobs,
        )
    except ChapterFailed as err:
        print(f"recsae book: {err}", file=sys.stderr)
        return 1
    except BookError as err:
        print(f"recsae book: {err}", file=sys.stderr)
        return 1 if "jupyter-book build failed" in str(err) else 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
