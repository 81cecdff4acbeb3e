"""A small Sphinx extension for the book.

* Keep every page free of console errors offline: Jupyter Book 1.x always loads
  ``sphinx_thebe``, which (with sphinx-book-theme) declares ``const THEBE_JS_URL`` twice per
  page -- a JavaScript error in every reader's console -- and points at a CDN. The book has no
  live-code buttons, so this extension drops the thebe scripts and any exact duplicate script
  tag from each page.
* Style: ``ntkbook/static/ntkbook.css`` keeps every page within its column (inline code,
  signatures and printed output wrap) at 1280 px and on a 390 px phone.
* Render ntklib's docstrings as written (API reference): their indented formula blocks, such
  as ``K = sum_j |delta_j|^2 |a_j|^2``, are plain-text mathematics, which reStructuredText
  would read as block quotes full of substitution references; each becomes a literal block.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_SECTION = re.compile(
    r"^\s*(Arguments|Args|Attributes|Returns|Raises|Examples?|Notes?|Yields):\s*$"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_formula_blocks(lines: list[str]) -> list[str]:
    """Make every indented block that follows a blank line (and is not already a literal
    block or a docstring section's body) a literal block, by a ``::`` paragraph before it."""
    out: list[str] = []
    para_last, in_literal, literal_indent, prev_blank = None, False, 0, True
    for line in lines:
        blank = not line.strip()
        if not blank and in_literal and _indent(line) <= literal_indent:
            in_literal = False
        if not blank and prev_blank and not in_literal and para_last is not None:
            base = _indent(para_last)  # the last line's: a bullet's continuation, say
            if _indent(line) > base:
                if not (para_last.rstrip().endswith("::") or _SECTION.match(para_last)):
                    out += [" " * base + "::", ""]
                in_literal = not _SECTION.match(para_last)
                literal_indent = base
        if not blank and not in_literal:
            para_last = line
        out.append(line)
        prev_blank = blank
    return out


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = literal_formula_blocks(lines)


def _clean_scripts(app, pagename, templatename, context, doctree) -> None:
    files = context.get("script_files")
    if not files:
        return
    seen, kept = set(), []
    for js in files:
        key = (str(js), repr(getattr(js, "attributes", {})))
        text = f"{js} {getattr(js, 'attributes', {})}"
        if "thebe" in text.lower() or key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def _add_static(app) -> None:
    """Serve ``ntkbook/static`` (the book's stylesheet) beside the project's static files."""
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))


def setup(app) -> dict[str, Any]:
    app.connect("builder-inited", _add_static)
    app.add_css_file("ntkbook.css")
    app.connect("html-page-context", _clean_scripts, priority=900)
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)  # before napoleon
    return {"parallel_read_safe": True, "parallel_write_safe": True}
