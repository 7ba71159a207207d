"""Fail when a built docs page shows a Sphinx role (``:func:`x```) as literal text.

mkdocstrings renders Markdown, so a Sphinx role in a docstring reaches the page verbatim instead of as
a link; docstrings link with ``[`name`][flowvla.module.name]``. Usage: python .ci/check_site.py site
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

# A role followed by its target: ":func:`x`" in text, ":func:<code>x</code>" once rendered.
ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const|ref):(?:`|<code)")


def literal_roles(site: Path) -> dict[str, list[str]]:
    """Page -> the literal roles it shows (with a little context)."""
    found: dict[str, list[str]] = {}
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(errors="replace")
        hits = [
            html.unescape(re.sub(r"<[^>]+>", "", text[m.start() : m.end() + 60])).split("\n")[0]
            for m in ROLE.finditer(text)
        ]
        if hits:
            found[str(page.relative_to(site))] = hits
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python .ci/check_site.py SITE_DIR (a built mkdocs site)", file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not any(site.rglob("*.html")):
        print(f"{site}: no HTML pages; build the site first (mkdocs build)", file=sys.stderr)
        return 2
    found = literal_roles(site)
    for page, hits in found.items():
        for hit in hits:
            print(f"{page}: literal Sphinx role: {hit}", file=sys.stderr)
    if found:
        print(f"{sum(map(len, found.values()))} literal roles on {len(found)} pages", file=sys.stderr)
        return 1
    print(f"no literal Sphinx roles in {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
