"""The commands in docs/ and launch/README.md name config files, variants and fields that
exist, and docs/reproduce.md lists every seed table."""

import os
import re
from pathlib import Path

import pytest

from dense_jax.core.config_files import config_from_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["docs/reproduce.md", "docs/data.md", "launch/README.md"]
CONFIG = re.compile(r"(configs/[\w/]+\.py)(?::([\w,]+))?")
FIELD = re.compile(r"--config\.([\w.]+)=")


def _spans():
    """Commands holding a config path, with their document: each command of a fenced block
    (backslash continuations joined) and each inline code span."""
    for doc in DOCS:
        text = Path(REPO, doc).read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        inline = re.sub(r"```.*?```", "", text, flags=re.S)
        commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines()]
        for span in commands + re.findall(r"`([^`]+)`", inline):
            if CONFIG.search(span):
                yield doc, span


SPANS = list(_spans())


def test_the_docs_have_commands():
    assert len(SPANS) > 25


@pytest.mark.parametrize("doc, span", SPANS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(SPANS)])
def test_configs_variants_and_fields_exist(doc, span):
    (path, variants), *_ = CONFIG.findall(span)
    config = config_from_file(os.path.join(REPO, path) + (f":{variants}" if variants else ""))
    for field in FIELD.findall(span):
        node = config
        for key in field.split("."):
            assert key in node, f"{doc}: --config.{field} is not a field of {path}"
            node = node[key]


def test_every_seed_table_is_listed():
    text = Path(REPO, "docs/reproduce.md").read_text()
    for heading in (
        "## DINO baselines",
        "## CrOC (Tables 1–3)",
        "## CrIBo (Tables 1–2)",
        "## NeCo",
        "## COMUS",
    ):
        assert heading in text
    rows = ["Tab. 1, CrOC", "Tab. 2 |", "Tab. 3, K-means", "Tab. 1, CrIBo", "Tab. 2, CrIBo", "Tab. 1b"]
    rows += ["Tab. 2, NeCo", "Tab. 8 (in-context)", "Tab. 1, VOC val", "Tab. 3, COCO val", "Tab. 5"]
    for row in rows:
        assert row in text, row
    for config in ("configs/cribo_coco.py", "configs/cribo_in1k.py", "configs/comus_voc.py"):
        assert config in text, config  # the methods that landed after the table was written
