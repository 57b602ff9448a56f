#!/usr/bin/env python
"""Copy the JavaScript the built book serves itself into ``book/_vendor`` (no CDN at page load).

Run after ``npm ci`` (``package.json`` + ``package-lock.json`` at the repository root pin the versions):

* ``require.js``                      <- ``node_modules/requirejs/require.js``
* ``html-manager/embed-amd.js`` + fonts <- ``node_modules/@jupyter-widgets/html-manager/dist/`` (renders the
  ipywidgets state papermill saved into each notebook; 1.0.x speaks the widget protocol 2 of ipywidgets 8)
* ``mathjax/``                        <- ``node_modules/mathjax/es5``, trimmed to ``tex-mml-chtml.js``, the TeX
  extensions, the CHTML woff-v2 fonts and the menu UI (2.5 MB instead of 24 MB)
* ``plotly.min.js``                   <- the plotly wheel's ``package_data`` (the same version that wrote the figures)

The folder is deliberately not named ``_static``: Jupyter Book 1 adds every ``.js``/``.css`` under a book's
``_static`` to every page. ``_config.yml`` serves it through ``html_static_path`` instead
(see ``../shared/reference/toolchain.md`` §3 and §10).

Usage: ``python scripts/vendor_js.py [--root REPO] [--check]``; ``--check`` only verifies the files are present.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (source relative to node_modules, destination relative to book/_vendor); directories are copied whole.
NPM_FILES: list[tuple[str, str]] = [
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", "html-manager/embed-amd.js"),
    ("mathjax/es5/tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"),
    ("mathjax/es5/input/tex/extensions", "mathjax/input/tex/extensions"),
    ("mathjax/es5/output/chtml/fonts/woff-v2", "mathjax/output/chtml/fonts/woff-v2"),
    ("mathjax/es5/ui", "mathjax/ui"),
]
#: html-manager's font-awesome files, referenced by embed-amd.js relative to itself.
FONT_SUFFIXES = (".woff", ".woff2", ".ttf", ".eot", ".svg")
#: files that must exist afterwards (what _config.yml points at).
REQUIRED = ["require.js", "html-manager/embed-amd.js", "mathjax/tex-mml-chtml.js", "plotly.min.js"]
PINS = {"@jupyter-widgets/html-manager": "1.0.15", "requirejs": "2.3.7", "mathjax": "3.2.2"}


def _installed_version(node_modules: Path, package: str) -> str:
    meta = node_modules / package / "package.json"
    if not meta.exists():
        raise SystemExit(f"{meta} is missing: run `npm ci` in {node_modules.parent} first")
    return json.loads(meta.read_text())["version"]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def plotly_js() -> Path:
    """plotly.min.js shipped inside the installed plotly wheel."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the installed plotly wheel has no plotly.min.js")
    return path


def vendor(root: Path = ROOT) -> Path:
    """Fill ``<root>/book/_vendor`` from ``<root>/node_modules`` and the plotly wheel; return the folder."""
    node_modules = root / "node_modules"
    for package, want in PINS.items():
        got = _installed_version(node_modules, package)
        if got != want:
            raise SystemExit(f"node_modules has {package}@{got}, package.json pins {want}: run `npm ci`")
    out = root / "book" / "_vendor"
    tmp = out.with_name("_vendor.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, dst in NPM_FILES:
        _copy(node_modules / src, tmp / dst)
    for font in (node_modules / "@jupyter-widgets/html-manager/dist").iterdir():
        if font.suffix in FONT_SUFFIXES:
            _copy(font, tmp / "html-manager" / font.name)
    _copy(plotly_js(), tmp / "plotly.min.js")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def check(root: Path = ROOT) -> list[str]:
    """Names of required vendored files that are missing (empty when the book can be built)."""
    out = root / "book" / "_vendor"
    return [name for name in REQUIRED if not (out / name).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    parser.add_argument("--check", action="store_true", help="only check that book/_vendor is complete")
    args = parser.parse_args(argv)
    if args.check:
        missing = check(args.root)
        if missing:
            print(
                f"book/_vendor lacks {missing}: run `npm ci && python scripts/vendor_js.py`", file=sys.stderr
            )
            return 1
        print("book/_vendor is complete")
        return 0
    out = vendor(args.root)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"vendored JavaScript into {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
