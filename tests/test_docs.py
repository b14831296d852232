"""The README and docs/ as a user navigates them: every relative link lands on a file (and on a
heading, where it names one), every `configs/...` path a page names exists, the README stays short."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "datasets/README.md"] + [os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, "docs", "**", "*.md"), recursive=True)] + [os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, "projects", "*", "README.md"))])
README_MAX_LINES = 250

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_CONFIG = re.compile(r"`((?:configs|projects/[A-Za-z0-9_]+/configs)/[^`\s]*)`")
_CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)


def _read(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page):
    seen, out = {}, set()
    for line in _CODE_BLOCK.sub("", _read(page)).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = github_anchor(m.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def links(page):
    text = _CODE_BLOCK.sub("", _read(page))
    return [a or b for a, b in _LINK.findall(text)]


def test_github_anchor_rule():
    assert github_anchor("Semantic Mask Head: 1×1 (default) vs the reference's 3×3") == \
        "semantic-mask-head-11-default-vs-the-references-33"
    assert github_anchor("Calibration of `default` (projection baseline only)") == \
        "calibration-of-default-projection-baseline-only"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(REPO, dest)):
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {dest})")
    assert not broken, f"{page}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_named_config_paths_exist(page):
    missing = []
    for path in _CONFIG.findall(_read(page)):
        path = re.sub(r":\d[\d-]*$", "", path.rstrip(".,;:"))  # a line reference
        if re.search(r"[<{]", path):  # a template such as configs/pading/coco/<task>_stage1.yaml
            continue
        if not glob.glob(os.path.join(REPO, path)):
            missing.append(path)
    assert not missing, f"{page} names config paths that do not exist: {missing}"


def test_readme_is_short():
    lines = _read("README.md").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (limit {README_MAX_LINES})"
