"""JUnit XML view of a CI report: one testsuite per model, one testcase per cell.

A failing cell's <failure> message names the metric that failed, the output and case, and the limit;
a crash or timeout is an <error>. The JSON report stays the source of truth.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def failure_message(cell: dict[str, Any]) -> str:
    """One line naming the first failing metric of a cell, e.g. 'max_abs 0.31 > atol 1e-4 + rtol 1e-3·|ref| ...'."""
    failures = cell.get("failures") or []
    if not failures:
        return (cell.get("message") or cell["status"]).splitlines()[0][:500]
    f = failures[0]
    value = f"{f['value']:.3g}" if isinstance(f.get("value"), (int, float)) else "n/a"
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return (f"{f['metric']} {value} exceeds atol {f['atol']:g} + rtol {f['rtol']:g}·|ref| on output "
            f"'{f['output']}' (case {f['case']}){more}")


def to_junit(report: dict[str, Any]) -> ET.Element:
    """The <testsuites> element for a CI report."""
    root = ET.Element("testsuites", name="tracefuse ci", tests=str(len(report["cells"])),
                      time=f"{report.get('duration_s', 0):.3f}")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for cell in report["cells"]:
        by_model.setdefault(cell["model"], []).append(cell)
    for model, cells in by_model.items():
        suite = ET.SubElement(
            root, "testsuite", name=model, tests=str(len(cells)),
            failures=str(sum(c["status"] == "fail" for c in cells)),
            errors=str(sum(c["status"] in ("error", "timeout") for c in cells)),
            skipped=str(sum(s["id"].split("/")[0] == model for s in report.get("skipped", []))),
            time=f"{sum(c.get('wall_s', 0) for c in cells):.3f}",
        )
        for cell in cells:
            name = cell["id"].split("/", 1)[1]
            case = ET.SubElement(suite, "testcase", classname=f"tracefuse.ci.{model}", name=name,
                                 time=f"{cell.get('wall_s', 0):.3f}")
            if cell["status"] == "fail":
                node = ET.SubElement(case, "failure", message=failure_message(cell), type="tolerance")
                node.text = "\n".join(f"{f['output']} ({f['case']}): {f['reason']}" for f in cell["failures"])
            elif cell["status"] in ("error", "timeout"):
                node = ET.SubElement(case, "error", message=failure_message(cell), type=cell["status"])
                node.text = (cell.get("message") or "") + ("\n" + cell["traceback"] if cell.get("traceback") else "")
            props = ET.SubElement(case, "properties")
            for key in ("source", "format", "runtime", "preset", "cache"):
                if cell.get(key) is not None:
                    ET.SubElement(props, "property", name=key, value=str(cell[key]))
        for skip in report.get("skipped", []):
            if skip["id"].split("/")[0] == model:
                case = ET.SubElement(suite, "testcase", classname=f"tracefuse.ci.{model}",
                                     name=skip["id"].split("/", 1)[1], time="0")
                ET.SubElement(case, "skipped", message=skip["reason"])
    return root


def write_junit(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the JUnit XML view of a CI report atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(to_junit(report))
    ET.indent(tree)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        tree.write(fh, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
