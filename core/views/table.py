"""Rows of dicts as an aligned text table, Markdown, CSV or JSON: the one renderer of every listing."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, Iterable, List, Sequence


def text_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(str(line[i])) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *cells])


def render(rows: List[Dict[str, Any]], columns: Iterable[str], fmt: str, title: str = "") -> str:
    """`table` (aligned text), `markdown`, `csv` or `json`."""
    columns = list(columns)
    if fmt == "json":
        return json.dumps({"title": title, "rows": rows}, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    if fmt == "markdown":
        lines = [f"## {title}", ""] if title else []
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
        return "\n".join(lines)
    table = text_table([c.upper() for c in columns], cells)
    return f"{title}\n{table}" if title else table
