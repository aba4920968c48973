"""The README is a map: it stays short, and every relative link in it and in the documents it points to resolves
(the file exists; a #fragment names a heading of that file, with GitHub's heading anchors)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
    "profiles/slurm/README.md",
    "bench/README.md",
]
README_MAX_BYTES = 12 * 1024
# Anchors another change writes later. Each must still be missing (the test fails once it exists: then delete the
# entry here, and the link is checked like every other).
PENDING_ANCHORS: set[tuple[str, str]] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(text):
    """The text without fenced blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _anchors(path):
    """GitHub's anchor of every heading: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen, anchors = {}, set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _relative_links(doc, root=ROOT):
    for target in LINK.findall(_prose((root / doc).read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked
            yield target


def _problem(doc, target, root=ROOT):
    """None if the link resolves, else what is wrong with it."""
    file_part, _, fragment = target.partition("#")
    dest = (root / doc).parent / file_part if file_part else root / doc
    if not dest.exists():
        return f"{doc}: link {target!r}: {dest} does not exist"
    if fragment and dest.suffix == ".md":
        key = (str(dest.resolve().relative_to(root.resolve())), fragment)
        if key in PENDING_ANCHORS:
            return None
        if fragment not in _anchors(dest):
            return f"{doc}: link {target!r}: no heading with anchor #{fragment} in {key[0]}"
    return None


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_relative_links_resolve(doc):
    assert (ROOT / doc).exists(), f"{doc} is missing"
    problems = [p for p in (_problem(doc, t) for t in _relative_links(doc)) if p]
    assert not problems, "\n".join(problems)


def test_pending_anchors_are_still_pending():
    for file, fragment in PENDING_ANCHORS:
        assert fragment not in _anchors(ROOT / file), (
            f"#{fragment} now exists in {file}: remove it from PENDING_ANCHORS in {Path(__file__).name}"
        )


def test_readme_is_a_map_not_a_manual():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (> {README_MAX_BYTES}): move reference text to docs/"
    readme = (ROOT / "README.md").read_text()
    assert "](docs/deviations.md)" in readme[:1500], "the deviations link belongs near the top of README.md"
    assert "make test" in readme and "make test" in (ROOT / ".ci" / "run").read_text()


def test_checker_sees_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Top (`x`)\n## Top (`x`)\n[ok](#top-x-1) [bad](b.md) [frag](#nope)\n"
        "```\n[in code](missing.md)\n```\n`[inline](missing.md)` [web](https://x.org)\n"
    )
    problems = [p for p in (_problem("a.md", t, tmp_path) for t in _relative_links("a.md", tmp_path)) if p]
    assert len(problems) == 2 and "b.md" in problems[0] and "#nope" in problems[1]
