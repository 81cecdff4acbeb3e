"""A small Sphinx extension for the book: keep every page free of console errors offline.

Jupyter Book 1.x always loads ``sphinx_thebe``, which (with sphinx-book-theme) declares
``const THEBE_JS_URL`` twice per page -- a JavaScript error in every reader's console -- and
points at a CDN. The book has no live-code buttons, so this extension drops the thebe scripts
and any exact duplicate script tag from each page.
"""

from __future__ import annotations

from typing import Any


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


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _clean_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
