"""The README's results tables are exactly what the code wrote to results/<name>/results.json."""
import re
from pathlib import Path

import pytest

from mmkd_utils.report import readme_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf8")
BLOCKS = re.findall(r"<!-- results:([\w.-]+):start -->\n(.*?)\n<!-- results:\1:end -->", README, flags=re.S)


def test_readme_has_results_tables():
    assert BLOCKS, "README.md has no <!-- results:NAME:start --> … <!-- results:NAME:end --> block"


@pytest.mark.parametrize("name, block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_table_equals_results_file(name, block):
    folder = ROOT / "results" / name
    assert (folder / "results.json").exists() or (folder / "bench.json").exists(), f"results/{name} has no results"
    assert block == readme_block(ROOT / "results" / name), (
        f"README's {name} table differs from results/{name}/results.json: run `python -m mmkd_utils publish`")
