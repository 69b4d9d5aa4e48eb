"""The README is a front page that tells the truth: its findings and results/README.md's tables are
exactly what the code writes from results/<name>/results.json, it stays short, and every link resolves."""
import re
from pathlib import Path

import pytest

from mmkd_utils.publish import findings, findings_markdown, github_anchor, readme_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf8")
RESULTS_MD = (ROOT / "results" / "README.md").read_text(encoding="utf8")
BLOCKS = [(name, block) for text in (README, RESULTS_MD)
          for name, block in re.findall(r"<!-- results:([\w.-]+):start -->\n(.*?)\n<!-- results:\1:end -->", text, flags=re.S)]


def test_results_readme_has_the_tables():
    assert len(BLOCKS) >= 10, "results/README.md has lost its <!-- results:NAME:start --> … :end --> blocks"


@pytest.mark.parametrize("name, block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_published_table_equals_results_file(name, block):
    folder = ROOT / "results" / name
    assert (folder / "results.json").exists() or (folder / "bench.json").exists(), f"results/{name} has no results"
    assert block == readme_block(folder), (
        f"the published {name} table differs from results/{name}/results.json: run `python -m mmkd_utils publish`")


def test_readme_findings_equal_the_results_files():
    block = re.search(r"<!-- findings:start -->\n(.*?)\n<!-- findings:end -->", README, flags=re.S)
    assert block, "README.md lacks its <!-- findings:start --> … <!-- findings:end --> block"
    rows = findings(ROOT / "results" / "README.md", ROOT / "results")
    assert block.group(1) == findings_markdown(rows), "README findings are stale: run `python -m mmkd_utils publish`"
    assert {r["verdict"] for r in rows} >= {"win", "no clear change"}
    assert (ROOT / "results" / "findings.png").stat().st_size > 20_000


def test_readme_is_a_front_page():
    assert len(README.encode("utf8")) < 15_000, "README.md is over 15 KB: move detail to results/README.md or a notebook"
    first_screen = README[:README.index("## Findings")]
    for must in ("make lab", "make test", "notebooks/00_setup_and_tour.ipynb", "colab.research.google.com"):
        assert must in first_screen


def links(text: str) -> list[str]:
    inline = re.findall(r"\]\(([^)\s]+)\)", text)
    defined = re.findall(r"^ {0,3}\[[^\]]+\]:[ \t]*(\S+)", text, flags=re.M)  # reference links: [label]: target
    return [t for t in inline + defined if not re.match(r"https?://|mailto:", t)]


def anchors(markdown_file: Path) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", markdown_file.read_text(encoding="utf8"), flags=re.M)}


@pytest.mark.parametrize("source", ["README.md", "results/README.md", "INSTRUCTORS.md", "CONTRIBUTING.md"])
def test_every_link_resolves(source):
    base = (ROOT / source).parent
    for link in links((ROOT / source).read_text(encoding="utf8")):
        path, _, anchor = link.partition("#")
        target = (base / path).resolve() if path else ROOT / source
        assert target.exists(), f"{source} links {link}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{source} links {link}: no such heading in {target.name}"


def test_reproduction_notes_equal_the_recorded_reruns():
    from mmkd_utils.publish import reproductions_markdown

    block = re.search(r"<!-- reproductions:start -->\n(.*?)\n<!-- reproductions:end -->", RESULTS_MD, flags=re.S)
    assert block and block.group(1) == reproductions_markdown(ROOT / "results")


def results_md_block(tag: str) -> str:
    """The text between results/README.md's ``<!-- TAG:start -->`` and ``<!-- TAG:end -->`` markers."""
    block = re.search(rf"<!-- {tag}:start -->\n(.*?)\n<!-- {tag}:end -->", RESULTS_MD, flags=re.S)
    if block is None:
        pytest.fail(f"results/README.md lacks its <!-- {tag}:start --> … <!-- {tag}:end --> block")
    return block.group(1)


def test_teacher_comparison_equals_the_results_files():
    from mmkd_utils.publish import teacher_comparison, teacher_comparison_markdown

    rows = teacher_comparison(ROOT / "results")
    assert results_md_block("teachers") == teacher_comparison_markdown(rows)
    assert all(r["same_baseline"] for r in rows), "a teacher comparison is not paired: its label-only rows differ"


def test_speech_comparison_equals_the_results_files():
    from mmkd_utils.publish import speech_comparison, speech_comparison_markdown, speech_majority

    rows = speech_comparison(ROOT / "results")
    majority = speech_majority()
    assert majority["group"] == "People & Body" and majority["test"][1] == 563 and majority["human"] == (9, 41)
    assert results_md_block("speech-voices") == speech_comparison_markdown(rows, majority)
    assert {r["voices"] for r in rows} == {"held-out", "human"} and all(r["delta"]["n"] >= 10 for r in rows)
