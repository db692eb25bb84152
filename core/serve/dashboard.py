"""The dashboard `jobmon serve` shows at `/`: static/index.html, its stylesheet and its script, no external assets.

The script reads `/jobs` every 5 seconds and `/jobs/<id>` for the job opened, and builds every element with
`textContent` and `createElementNS`: nothing from a job name, a log or a finding is ever parsed as HTML. The
server's Content-Security-Policy allows only these same-origin files (no inline script or style).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: URL path -> (file in static/, content type)
ASSETS: Dict[str, Tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def load_asset(route: str) -> Optional[Tuple[bytes, str]]:
    """(content, content type) of a dashboard file, None for any other path."""
    if route not in ASSETS:
        return None
    name, content_type = ASSETS[route]
    with open(os.path.join(STATIC, name), "rb") as handle:
        return handle.read(), content_type
