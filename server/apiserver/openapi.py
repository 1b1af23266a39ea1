"""The OpenAPI document, built from the routes' docstrings, and a minimal page that shows it."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

__all__ = ["docs_page", "openapi_document"]

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
_cache: dict[int, dict[str, Any]] = {}


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """An OpenAPI 3.1 document listing every route with its summary and description."""
    key = id(routes)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        doc = inspect.getdoc(route.endpoint) or ""
        summary, _, description = doc.partition("\n")
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation: dict[str, Any] = {
                "summary": summary.strip(),
                "operationId": f"{method.lower()}_{route.name}",
                "responses": {"200": {"description": "OK"}},
            }
            if description.strip():
                operation["description"] = description.strip()
            if params:
                operation["parameters"] = params
            paths.setdefault(route.path, {})[method.lower()] = operation
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "llamactl API",
            "version": "1",
            "description": 'Llama Deploy compatible API server. Errors are JSON {"detail": ...}.',
        },
        "paths": paths,
    }
    _cache[key] = document
    return document


def docs_page(openapi_url: str) -> str:
    """A self-contained HTML page that fetches the OpenAPI document and lists the operations."""
    url = html.escape(openapi_url, quote=True)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>llamactl API</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:0 .3em}}.m{{display:inline-block;width:4.5em;font-weight:bold}}
li{{margin:.4em 0}}small{{color:#555}}</style></head>
<body><h1>llamactl API</h1><p>OpenAPI document: <a href="{url}">{url}</a></p><ul id="ops"></ul>
<script>
fetch("{url}").then(r => r.json()).then(doc => {{
  const ul = document.getElementById("ops");
  for (const [path, ops] of Object.entries(doc.paths)) {{
    for (const [method, op] of Object.entries(ops)) {{
      const li = document.createElement("li");
      const m = document.createElement("span"); m.className = "m"; m.textContent = method.toUpperCase();
      const c = document.createElement("code"); c.textContent = path;
      const s = document.createElement("small"); s.textContent = " " + (op.summary || "");
      li.append(m, c, s); ul.append(li);
    }}
  }}
}});
</script></body></html>
"""
