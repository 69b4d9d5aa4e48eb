"""Build the course's website (`make site`): stage the pages in build/site-src/, then Sphinx writes build/site/.

The site is made from what the repository stores, never by running a notebook: the README is the landing
page, then every ``notebooks/NN_*.ipynb`` in course order (found by glob), results/README.md,
INSTRUCTORS.md, CONTRIBUTING.md and the datasheet. The staged copies differ from the originals only in
what a website needs (the originals are never touched):

- links between the repository's markdown files and notebooks point at their pages; a link to any other
  file of the repository points at that file on the forge (the address from mmkd_utils.notebooks, the one
  place it is kept); images the pages show are copied beside them;
- the Colab badge image is served from the site (the badge on the forge would be a request off the site);
- the worked solutions are folded: a code cell in nbgrader's ``### BEGIN SOLUTION`` markup is tagged
  ``hide-cell`` (MyST-NB folds its input and output), a markdown one becomes a closed dropdown.

Sphinx runs with warnings as errors (``-W --keep-going``). The build's time and the site's size are printed
and written to build/site-build.json. Usage: ``python docs/build.py [--out build/site]``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = "_badges/colab-badge.svg"  # staged from docs/_badges/
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
# The markdown pages besides the notebooks: repository path -> staged path (the README is the landing page).
PAGES = {"README.md": "index.md", "results/README.md": "results/README.md", "INSTRUCTORS.md": "INSTRUCTORS.md",
         "CONTRIBUTING.md": "CONTRIBUTING.md", "data/README.md": "data/README.md"}
SOLUTION = re.compile(r"^[ \t]*#{3} BEGIN SOLUTION[ \t]*\n|\n?^[ \t]*#{3} END SOLUTION[ \t]*$", re.M)
# Code cells folded: nbgrader's marker -> the cell's tag on the site (a class of its box) and its prompts.
FOLDED = {"### BEGIN SOLUTION": ("mmkd-solution", "Show the worked solution", "Hide the worked solution"),
          "### BEGIN HIDDEN TESTS": ("mmkd-hidden-tests", "Show the hidden checks", "Hide the hidden checks")}
# A ```python fence whose code has IPython's ! or % lines (the Colab setup cell) is highlighted as IPython.
IPYTHON_FENCE = re.compile(r"^(\s*```+)python[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S)
TOCTREE = "\n\n```{{toctree}}\n:hidden:\n:caption: {caption}\n:maxdepth: 1\n\n{entries}\n```\n"


def notebooks(root: Path = ROOT) -> list[str]:
    """The course's notebooks in course order (their NN_ prefix), as repository paths."""
    return [p.relative_to(root).as_posix() for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))]


def forge_url(path: str, folder: bool = False) -> str:
    from mmkd_utils.notebooks import BRANCH, REPO_SLUG

    return f"https://github.com/{REPO_SLUG}/{'tree' if folder else 'blob'}/{BRANCH}/{path}"


class Stage:
    """Writes the staged sources, each only when its content changed (so Sphinx rebuilds only what changed)."""

    def __init__(self, src: Path):
        self.src, self.written = src, set()
        self.pages = {**PAGES, **{nb: nb for nb in notebooks()}}

    def write(self, rel: str, data: bytes) -> None:
        path = self.src / rel
        self.written.add(path)
        if not (path.exists() and path.read_bytes() == data):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def link(self, target: str, page: str) -> str:
        """Where a link or image of the repository file ``page`` points on the site (staged paths)."""
        here = os.path.dirname(page)
        if target == BADGE_URL:
            return relative(BADGE, self.pages[page])
        if re.match(r"[a-zA-Z][\w+.-]*:|#", target):
            return target  # a web address, mailto:, or an anchor on the same page
        path, hash_, anchor = target.partition("#")
        repo_path = os.path.normpath(os.path.join(here, path)).replace(os.sep, "/")
        if repo_path in self.pages:
            return relative(self.pages[repo_path], self.pages[page]) + hash_ + anchor
        file = ROOT / repo_path
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
            self.write(repo_path, file.read_bytes())  # shown on the page: served by the site
            return relative(repo_path, self.pages[page]) + hash_ + anchor
        if file.exists() and not repo_path.startswith(".."):
            return forge_url(repo_path, folder=file.is_dir()) + hash_ + anchor
        return target  # a broken link stays broken: Sphinx reports it and the build fails

    def markdown(self, text: str, page: str) -> str:
        def inline(m: re.Match) -> str:
            return m.group(1) + self.link(m.group(2), page) + (m.group(3) or "")

        text = IPYTHON_FENCE.sub(lambda m: m.group(0).replace("python", "ipython3", 1)
                                 if re.search(r"^\s*[!%]", m.group(2), flags=re.M) else m.group(0), text)
        text = re.sub(r"(\]\(<?)([^)\s>]+)(>?(?:\s+\"[^\"]*\")?\))", inline, text)  # [x](target), ![x](target)
        return re.sub(r"^( {0,3}\[[^\]]+\]:[ \t]*)(\S+)()", inline, text, flags=re.M)  # [x]: target

    def notebook(self, path: str) -> bytes:
        nb = json.loads((ROOT / path).read_text(encoding="utf8"))
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "markdown":
                if "### BEGIN SOLUTION" in source:
                    source = fold_markdown(source)
                cell["source"] = self.markdown(source, path)
            elif cell["cell_type"] == "code":
                for marker, (tag, show, hide) in FOLDED.items():
                    if marker in source:
                        metadata = cell.setdefault("metadata", {})
                        metadata["tags"] = [*metadata.get("tags", []), "hide-cell", tag]
                        metadata["mystnb"] = {"code_prompt_show": show, "code_prompt_hide": hide}
                        break
        return json.dumps(nb, ensure_ascii=False, indent=1).encode("utf8")

    def build(self) -> None:
        self.write(BADGE, (DOCS / BADGE).read_bytes())
        course = notebooks()
        for repo_path, staged in PAGES.items():
            text = self.markdown((ROOT / repo_path).read_text(encoding="utf8"), repo_path)
            if staged == "index.md":
                pages = [p.removesuffix(".md") for p in PAGES.values() if p != "index.md"]
                chapters = [p.removesuffix(".ipynb") for p in course]
                text += TOCTREE.format(caption="The course", entries="\n".join(chapters))
                text += TOCTREE.format(caption="Reference", entries="\n".join(pages))
            self.write(staged, text.encode("utf8"))
        for path in course:
            self.write(path, self.notebook(path))
        for stale in [p for p in self.src.rglob("*") if p.is_file() and p not in self.written]:
            stale.unlink()  # a notebook or image that is gone from the repository is gone from the site


def relative(target: str, page: str) -> str:
    """The link from the staged file ``page`` to the staged file ``target``."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def fold_markdown(source: str) -> str:
    """A markdown cell in nbgrader's solution markup as a closed dropdown, without the markers."""
    body = SOLUTION.sub("", source).strip("\n")
    fence = ":" * max(4, 1 + max((len(run) for run in re.findall(r"^:{3,}", body, flags=re.M)), default=0))
    return f"{fence}{{dropdown}} Worked solution\n:class-container: mmkd-solution\n\n{body}\n{fence}\n"


def sphinx(src: Path, out: Path, doctrees: Path, quiet: bool = True) -> int:
    """Sphinx's HTML build of ``src`` with this folder's conf.py, warnings as errors; its exit status."""
    from sphinx.cmd.build import build_main

    return build_main(["-b", "html", "-W", "--keep-going", *(["-q"] if quiet else []), "-c", str(DOCS),
                       "-d", str(doctrees), str(src), str(out)])


def size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    args = parser.parse_args(argv)
    build = args.out.parent
    start = time.perf_counter()
    Stage(build / "site-src").build()
    status = sphinx(build / "site-src", args.out, build / "site-doctrees")
    seconds = time.perf_counter() - start
    if status:
        print(f"The site's build failed (warnings are errors): see above. {seconds:.0f} s.", file=sys.stderr)
        return status
    total, count = size(args.out)
    (build / "site-build.json").write_text(json.dumps({"seconds": round(seconds, 1), "bytes": total, "files": count}))
    print(f"Site built in {seconds:.0f} s: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
          f"/index.html, {total / 1e6:.1f} MB in {count} files. Preview: make serve-site")
    return 0


if __name__ == "__main__":
    sys.exit(main())
