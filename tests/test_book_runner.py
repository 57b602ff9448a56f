"""The ``recsae book`` runner on a tiny throwaway book (two toy chapters), plus checks of the real book's layout.

The toy chapters need no data and run in a couple of seconds each (one kernel start per notebook).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from recsae_core import book

REPO = Path(__file__).resolve().parents[1]

TOY_CELLS = [
    ("markdown", "# Toy chapter\n\nA tiny chapter for the runner's tests.", []),
    ("code", 'dataset = "a"\nscale = 1\nfail = False\ndevice = "cpu"\nrendezvous = ""', ["parameters"]),
    ("code", "import os\nprint('RECSAE_DATA=' + str(os.environ.get('RECSAE_DATA')))", []),
    ("code", "value = scale * 2\nprint(f'value={value}')", []),
    ("code", "if fail:\n    raise RuntimeError('boom in the toy chapter')", []),
    ("code", "print('finished')", []),
    (  # with a folder: check in, then wait until another notebook has checked in too (side-by-side runs)
        "code",
        "if rendezvous:\n"
        "    import pathlib, time, uuid\n"
        "    here = pathlib.Path(rendezvous)\n"
        "    (here / uuid.uuid4().hex).touch()\n"
        "    t0 = time.time()\n"
        "    while len(list(here.iterdir())) < 2:\n"
        "        assert time.time() - t0 < 60, 'no other notebook ran at the same time'\n"
        "        time.sleep(0.05)",
        [],
    ),
]


def _toy_notebook(path: Path) -> None:
    cells = []
    for kind, src, tags in TOY_CELLS:
        cell = new_markdown_cell(src) if kind == "markdown" else new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _write_profile(root: Path, chapter: str, **params) -> None:
    profile = {
        "title": f"Toy {chapter}",
        "description": "A toy chapter.",
        "datasets": ["a", "b"],
        "smoke": {"datasets": ["a"], "params": {"scale": 1, "fail": False, **params}},
        "default": {"params": {"scale": 1, "fail": False}},
        "paper": {"params": {"scale": 1, "fail": False}},
    }
    (root / "book" / "profiles" / f"{chapter}.yaml").write_text(yaml.safe_dump(profile))


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    """A book root with two toy chapters (``toy_a``, ``toy_b``) on the toy datasets ``a`` and ``b``."""
    root = tmp_path / "toybook"
    (root / "book" / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "book" / "intro.md").write_text("# Toy book\n\nIntro.\n")
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {
                "caption": "Toys",
                "chapters": [
                    {
                        "file": f"chapters/{c}/index",
                        "sections": [{"file": f"chapters/{c}/a"}, {"file": f"chapters/{c}/b"}],
                    }
                    for c in ("toy_a", "toy_b")
                ],
            }
        ],
    }
    (root / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for chapter in ("toy_a", "toy_b"):
        _toy_notebook(root / "book" / f"{chapter}.ipynb")
        _write_profile(root, chapter)
    return root


def _run(root: Path, out: Path, **kw):
    return book.run_book(root=root, profile="smoke", output=out, build=False, progress=False, **kw)


def _outputs(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_runner_executes_skips_reexecutes_and_keeps_good_notebook_on_failure(
    toy_root, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    monkeypatch.setenv("RECSAE_DATA", "/nowhere/passed-through")
    # other engineers may edit recsae_core while this runs; the package's share of the hash is tested below
    monkeypatch.setattr(book, "package_source_hash", lambda: "fixed")
    executed = out / "_build" / "executed" / "smoke"

    # 1. first run executes both chapters (smoke: dataset "a" only)
    first = _run(toy_root, out)
    assert first["executed"] == [("toy_a", "a"), ("toy_b", "a")]
    nb_a = executed / "toy_a" / "a.ipynb"
    assert "value=2" in _outputs(nb_a)
    assert "RECSAE_DATA=/nowhere/passed-through" in _outputs(nb_a)  # the kernel's environment, unchanged
    sidecar = json.loads((executed / "toy_a" / "a.inputs.json").read_text())
    assert sidecar["inputs"]["params"] == {"scale": 1, "fail": False, "dataset": "a"}

    # the page shows the parameters (collapsed) and hides the source's parameters cell; title names the dataset
    nb = nbformat.read(nb_a, as_version=4)
    tags = {i: c.metadata.get("tags", []) for i, c in enumerate(nb.cells)}
    assert any("parameters" in t and "remove-cell" in t for t in tags.values())
    assert any("injected-parameters" in t and "hide-input" in t for t in tags.values())
    assert nb.cells[0].source.startswith("# Toy chapter: a")
    cost = [c for c in nb.cells if book.COST_TAG in c.metadata.get("tags", [])]  # what the page cost
    assert len(cost) == 1 and nb.cells[-1] is cost[0]
    assert re.search(r"Executed by `recsae book` in \d+ s on cpu", cost[0].source), cost[0].source

    # 2. unchanged inputs: both skipped
    second = _run(toy_root, out)
    assert second["executed"] == [] and second["skipped"] == [("toy_a", "a"), ("toy_b", "a")]

    # 3. a changed parameter re-executes only that chapter
    _write_profile(toy_root, "toy_a", scale=5)
    third = _run(toy_root, out)
    assert third["executed"] == [("toy_a", "a")] and third["skipped"] == [("toy_b", "a")]
    assert "value=10" in _outputs(nb_a)

    # 4. a failing cell: exit status 1, the chapter, dataset and cell named, the previous notebook untouched
    nb_b = executed / "toy_b" / "a.ipynb"
    before = nb_b.read_bytes()
    _write_profile(toy_root, "toy_b", fail=True)
    capsys.readouterr()
    rc = book.main(
        ["--root", str(toy_root), "--profile", "smoke", "--output", str(out), "--no-build", "--quiet"]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "chapter 'toy_b'" in err and "dataset 'a'" in err
    assert "cell 5 of toy_b.ipynb" in err and "boom in the toy chapter" in err
    assert nb_b.read_bytes() == before
    assert (executed / "toy_b" / "a.failed.ipynb").is_file()
    leftovers = [p.name for p in (executed / "toy_b").iterdir() if "partial" in p.name]
    assert leftovers == []
    # and the failed run is not mistaken for a good one: the next run tries again
    job = book.plan(toy_root, "smoke", ["toy_b"], None, out)[0][0]
    assert book._recorded_hash(job) not in (None, book.input_hash(job)[0])


def test_jobs_at_once_runs_notebooks_side_by_side_and_reports_the_first_failure(toy_root, tmp_path):
    """Each toy notebook waits (up to 60 s) for another one to check in: both finish only when they ran at
    the same time (one at a time, the first would fail)."""
    meet = tmp_path / "meet"
    meet.mkdir()
    for chapter in ("toy_a", "toy_b"):
        _write_profile(toy_root, chapter, rendezvous=str(meet))
    out = tmp_path / "out"
    summary = _run(toy_root, out, jobs_at_once=2)
    assert summary["executed"] == [("toy_a", "a"), ("toy_b", "a")] and len(list(meet.iterdir())) == 2
    assert summary["wall_seconds"] < sum(summary["seconds"].values())
    _write_profile(toy_root, "toy_b", fail=True)
    with pytest.raises(book.ChapterFailed, match="boom"):
        _run(toy_root, out, jobs_at_once=2, force=True)
    assert (out / "_build" / "executed" / "smoke" / "toy_b" / "a.failed.ipynb").is_file()
    with pytest.raises(book.BookError, match="jobs_at_once"):
        _run(toy_root, out, jobs_at_once=0)


def test_dataset_subset_and_generated_toc(toy_root, tmp_path):
    jobs, toc, _ = book.plan(toy_root, "smoke", None, ["b"], tmp_path)
    assert [(j.chapter, j.dataset) for j in jobs] == [("toy_a", "b"), ("toy_b", "b")]
    gen = book.generated_toc(toc, jobs[:1])
    chapters = gen["parts"][0]["chapters"]
    # the chapter that did not run keeps its index page (links to it resolve), without dataset pages
    assert chapters == [
        {"file": "chapters/toy_a/index", "sections": [{"file": "chapters/toy_a/b"}]},
        {"file": "chapters/toy_b/index"},
    ]
    assert gen["root"] == "book/intro"
    # a dataset the root toc does not list is appended
    extra = book.Job("toy_a", "zzz", jobs[0].source, {}, tmp_path / "x.ipynb")
    gen = book.generated_toc(toc, [extra])
    assert gen["parts"][0]["chapters"][0]["sections"] == [{"file": "chapters/toy_a/zzz"}]


def test_dataset_params_and_minutes(toy_root, tmp_path, monkeypatch):
    """A profile's ``dataset_params`` override its ``params`` on one page only; ``minutes`` makes the
    side-by-side runner start the longest page first; both are checked before anything runs."""
    prof = yaml.safe_load((toy_root / "book" / "profiles" / "toy_b.yaml").read_text())
    prof["default"] |= {"dataset_params": {"b": {"scale": 5}}, "minutes": {"b": 30, "a": 2}}
    (toy_root / "book" / "profiles" / "toy_b.yaml").write_text(yaml.safe_dump(prof))
    jobs, _, _ = book.plan(toy_root, "default", None, None, tmp_path)
    got = {(j.chapter, j.dataset): (j.params["scale"], j.minutes) for j in jobs}
    assert got == {
        ("toy_a", "a"): (1, 0),
        ("toy_a", "b"): (1, 0),
        ("toy_b", "a"): (1, 2),
        ("toy_b", "b"): (5, 30),
    }
    seen = []
    monkeypatch.setattr(
        book, "_run_side_by_side", lambda pending, run_one, n: seen.extend(j for _, j in pending)
    )
    monkeypatch.setattr(book, "package_source_hash", lambda: "fixed")
    book.run_book(
        root=toy_root, profile="default", output=tmp_path, build=False, progress=False, jobs_at_once=2
    )
    assert [(j.chapter, j.dataset) for j in seen] == [
        ("toy_b", "b"),
        ("toy_b", "a"),
        ("toy_a", "a"),
        ("toy_a", "b"),
    ]
    for bad, match in (
        ({"dataset_params": {"b": {"scale": 5, "epochs": -1}}}, r"profile 'default', parameter 'epochs'"),
        ({"dataset_params": {"zzz": {"scale": 5}}}, r"has dataset_params for \['zzz'\]"),
        ({"dataset_params": {"b": 3}}, "dataset_params must map"),
        ({"minutes": {"b": -1}}, "minutes must map"),
        ({"minutes": {"zzz": 1}}, r"has minutes for \['zzz'\]"),
    ):
        prof["default"] = {"params": {"scale": 1, "fail": False}, **bad}
        (toy_root / "book" / "profiles" / "toy_b.yaml").write_text(yaml.safe_dump(prof))
        with pytest.raises(book.BookError, match=match):
            book.plan(toy_root, "default", None, None, tmp_path)


def test_plan_rejects_bad_arguments(toy_root, tmp_path):
    with pytest.raises(book.BookError, match="unknown chapter"):
        book.plan(toy_root, "smoke", ["nope"], None, tmp_path)
    with pytest.raises(book.BookError, match="nothing to run"):
        book.plan(toy_root, "smoke", None, ["not-a-dataset"], tmp_path)
    _write_profile(toy_root, "toy_a", undeclared_knob=3)
    with pytest.raises(book.BookError, match="undeclared_knob"):
        book.plan(toy_root, "smoke", None, None, tmp_path)
    assert book.main(["--root", str(toy_root), "--profile", "smoke", "--chapter", "nope", "--quiet"]) == 2


def test_input_hash_sees_package_and_notebook_changes(toy_root, tmp_path, monkeypatch):
    job = book.plan(toy_root, "smoke", ["toy_a"], None, tmp_path)[0][0]
    h0, parts = book.input_hash(job)
    assert set(parts) >= {"notebook", "params", "package", "data", "environment"}
    assert book.input_hash(job)[0] == h0  # deterministic
    monkeypatch.setattr(book, "package_source_hash", lambda: "changed")
    assert book.input_hash(job)[0] != h0
    monkeypatch.undo()
    nb = nbformat.read(job.source, as_version=4)
    nb.cells[3].source += "\n# edited"
    nbformat.write(nb, job.source)
    assert book.input_hash(job)[0] != h0


def test_real_book_layout_is_consistent(tmp_path):
    """Root _toc.yml sections equal each profile's datasets; every profile's parameters are declared."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    chapters = book.toc_chapters(toc)
    assert chapters, "the root _toc.yml lists no chapters"
    for name, sections in chapters:
        ch = book.load_chapter(REPO, name)
        assert sections == ch.datasets, f"_toc.yml sections of {name} differ from book/profiles/{name}.yaml"
        src = nbformat.read(ch.source, as_version=4)
        assert all(not c.get("outputs") for c in src.cells if c.cell_type == "code"), (
            f"{ch.source} has outputs"
        )
    for profile in book.PROFILES:
        jobs, _, _ = book.plan(REPO, profile, None, None, tmp_path)
        assert jobs


def test_ticking_bars_redraws_a_bar_while_nothing_completes():
    """A long cell: the bar's elapsed time must keep moving although no cell finishes."""
    import io
    import time

    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(total=3, file=out, mininterval=0)
    before = out.getvalue().count("\r")
    with book.ticking_bars(interval=0.05):
        time.sleep(0.4)
    redraws = out.getvalue().count("\r") - before
    bar.close()
    assert redraws >= 3, f"only {redraws} redraws in 0.4 s at a 0.05 s interval"


def test_cuda_profile_without_gpu_stops_before_executing_and_device_overrides(
    toy_root, tmp_path, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _write_profile(toy_root, "toy_a", device="cuda")
    with pytest.raises(book.BookError, match=r"no CUDA GPU.*--device cpu"):
        _run(toy_root, tmp_path / "out", chapters=["toy_a"])
    assert not (tmp_path / "out" / "_build" / "executed").exists()  # nothing ran
    jobs, _, _ = book.plan(toy_root, "smoke", ["toy_a"], None, tmp_path, device="cpu")
    assert [j.params["device"] for j in jobs] == ["cpu"]
    book.check_cuda(jobs, "smoke")  # the override passes the check
    with pytest.raises(book.BookError, match="--device"):
        book.plan(toy_root, "smoke", ["toy_a"], None, tmp_path, device="gpu")


def _chapter(**kw) -> book.Chapter:
    base = dict(
        name="ch",
        source=Path("ch.ipynb"),
        title="Ch",
        description="",
        datasets=["ml-100k"],
        optional_datasets=[],
        sections={},
    )
    return book.Chapter(**{**base, **kw})


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"architecture": "relu"}, "architecture"),
        ({"architectures": ["topk", "nope"]}, "architectures"),
        ({"l1_coeff": -0.1}, "l1_coeff"),
        ({"l1_coeffs": [0.1, -1]}, "l1_coeffs"),
        ({"epochs": 0}, "epochs"),
        ({"dict_sizes": [512, -2]}, "dict_sizes"),
        ({"lr": "fast"}, "lr"),
        ({"models": ["sasrec", "gpt"]}, "models"),
        ({"model": "sasrec", "site": "sasrec.block9x"}, "site"),
        ({"models": ["mf"], "sites": ["mf.user", "sasrec.block0"]}, "sites"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_bad_profile_parameters_stop_before_executing(params, named):
    with pytest.raises(book.BookError) as err:
        book.check_params(_chapter(), "default", params, ["ml-100k"])
    msg = str(err.value)
    assert "chapter 'ch'" in msg and "profile 'default'" in msg and f"parameter {named!r}" in msg


def test_good_profile_parameters_pass_and_sequential_needs_timestamps():
    good = {
        "architectures": ["relu_l1", "topk"],
        "l1_coeffs": [0.0, 0.1],
        "epochs": 3,
        "model": "sasrec",
        "site": "sasrec.block0",
        "device": "cuda:1",
        "alphas": [-10, 0, 10],
        "beta_max_steps": None,
    }
    book.check_params(_chapter(), "default", good, ["ml-100k"])
    book.check_params(_chapter(sequential=True), "default", {}, ["ml-100k", "ml-1m-prefix"])
    with pytest.raises(book.BookError, match=r"'ml-1m-notime'.*no timestamps"):
        book.check_params(_chapter(sequential=True), "default", {}, ["ml-100k", "ml-1m-notime"])


def test_kernels_print_no_tcp_warning(toy_root, tmp_path, capfd):
    _run(toy_root, tmp_path / "out", chapters=["toy_a"])
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err
    assert "KeyboardInterrupt" not in out + err  # jupyter_client's SIGINT at shutdown, skipped (book.py)


def test_subset_run_builds_every_page_executed_earlier(toy_root, tmp_path):
    """After a full run, `--chapter toy_b` re-executes toy_b only but the book keeps toy_a's pages."""
    out = tmp_path / "out"
    earlier = out / "_build" / "executed" / "smoke" / "toy_a"
    earlier.mkdir(parents=True)
    (earlier / "a.ipynb").write_text("{}")
    (earlier / "b.ipynb").write_text("{}")
    (earlier / "a.failed.ipynb").write_text("{}")  # a failed copy is never a page
    (out / "_build" / "executed" / "default" / "toy_b").mkdir(parents=True)
    (out / "_build" / "executed" / "default" / "toy_b" / "a.ipynb").write_text("{}")  # another profile
    jobs, toc, loaded = book.plan(toy_root, "smoke", ["toy_b"], None, out)
    pages = book.pages_to_build(toy_root, "smoke", toc, jobs, loaded, out)
    assert sorted((p.chapter, p.dataset) for p in pages) == [("toy_a", "a"), ("toy_a", "b"), ("toy_b", "a")]
    assert "toy_a" in loaded
    gen = book.generated_toc(toc, pages)
    assert [c["file"] for c in gen["parts"][0]["chapters"]] == [
        "chapters/toy_a/index",
        "chapters/toy_b/index",
    ]
