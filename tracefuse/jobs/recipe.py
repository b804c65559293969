"""The CI recipe (`tracefuse.toml`): models × formats × presets × runtimes, with tolerances and overrides.

Parsed with tomllib and checked key by key; every error names the offending key and the line it is on
(tomllib gives no line numbers, so the line is found by scanning the text). See docs/ci.md for the schema.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = "tracefuse.toml"
NO_PRESET = "none"
_TOP_KEYS = {"ci", "defaults", "formats", "models"}
_CI_KEYS = {"jobs", "timeout_s", "cache_dir", "work_dir"}
_CELL_KEYS = {"formats", "runtimes", "presets", "tolerance", "options", "timeout_s", "task"}
_MODEL_KEYS = _CELL_KEYS | {"source", "name", "overrides"}
_OVERRIDE_KEYS = {"format", "runtime", "preset", "tolerance", "options", "timeout_s"}
_FORMAT_KEYS = {"format", "options"}
_TOL_KEYS = {"atol", "rtol"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class RecipeError(TracefuseError):
    """The recipe file is missing, is not valid TOML, or has a bad key or value (exit code 2)."""


@dataclass(frozen=True)
class FormatVariant:
    """A named export target: a registered format plus exporter options (e.g. onnx with the torchscript exporter)."""

    name: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Override:
    """Settings for the cells of one model that match format / runtime / preset (None matches any)."""

    format: str | None = None
    runtime: str | None = None
    preset: str | None = None
    tolerance: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One `[[models]]` entry with the defaults already merged in."""

    name: str
    source: str
    task: str | None
    formats: tuple[str, ...]
    runtimes: tuple[str, ...]
    presets: tuple[str, ...]
    tolerance: dict[str, float]
    options: dict[str, Any]
    timeout_s: float
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe."""

    path: Path
    models: tuple[ModelEntry, ...]
    formats: dict[str, FormatVariant]
    jobs: int = 1
    timeout_s: float = 900.0
    cache_dir: Path = Path(".tracefuse-cache")
    work_dir: Path = Path("build/ci")


def _header_paths(lines: list[str]) -> list[tuple[str, int]]:
    """Each table header as a resolved path (`[[models.overrides]]` -> `models[1].overrides[0]`) and its line."""
    tables: list[tuple[str, int]] = []
    counts: dict[str, int] = {}
    for no, line in enumerate(lines, 1):
        m = re.match(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]", line)
        if not m:
            continue
        resolved = ""
        parts = [p.strip().strip('"') for p in m.group(2).split(".")]
        for i, part in enumerate(parts):
            resolved = f"{resolved}.{part}" if resolved else part
            last = i == len(parts) - 1
            if last and m.group(1) == "[[":
                counts[resolved] = counts.get(resolved, -1) + 1
            if resolved in counts:
                resolved = f"{resolved}[{counts[resolved]}]"
        tables.append((resolved, no))
    return tables


def key_line(text: str, dotted: str) -> int | None:
    """The 1-based line where a dotted key such as `models[2].tolerance.atol` is set, or None.

    Table headers are resolved in order, so `models[2]` means the third `[[models]]` block; the key is
    searched from the deepest header that prefixes it up to the next header (inline tables included).
    """
    lines = text.splitlines()
    best: tuple[int, int] | None = None  # (length of the header path, its line)
    for name, no in _header_paths(lines):
        if dotted == name or dotted.startswith(name + ".") or dotted.startswith(name + "["):
            if best is None or len(name) >= best[0]:
                best = (len(name), no)
    rest = dotted[best[0]:].lstrip(".") if best else dotted
    words = [re.sub(r"\[\d+\]$", "", w) for w in rest.split(".") if w]
    if not words:
        return best[1] if best else None
    begin = best[1] if best else 1
    first = re.compile(rf"^\s*{re.escape(words[0])}\s*=")
    leaf = re.compile(rf"(^|[\s{{,]){re.escape(words[-1])}\s*=")
    for no in range(begin, len(lines) + 1):
        line = lines[no - 1]
        if no > begin and re.match(r"^\s*\[", line):
            break
        if (best is None or no > begin) and first.search(line) and (len(words) == 1 or leaf.search(line)):
            return no
    for no in range(begin, len(lines) + 1):  # a key spread over lines, or set inside an inline table
        if no > begin and re.match(r"^\s*\[", lines[no - 1]):
            break
        if leaf.search(lines[no - 1]):
            return no
    if best:
        return best[1]
    return next((no for name, no in _header_paths(lines) if name.startswith(dotted)), None)


def _keys(value: Any) -> set[str]:
    """The keys of a table, or none when it is not one (the table check then names the problem)."""
    return set(value) if isinstance(value, dict) else set()


class _Checker:
    """Key-by-key checks that raise RecipeError naming the key and its line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, key: str, problem: str, *, found: Any = None, fix: str | None = None) -> RecipeError:
        line = key_line(self.text, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return RecipeError(f"{where}: key '{key}' {problem}",
                           found=None if found is None else repr(found)[:200], fix=fix)

    def table(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table", found=value)
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else k, "is not a known key",
                                fix=f"use one of: {', '.join(sorted(allowed))}")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a non-empty list of names", found=value)
        return tuple(value)

    def number(self, value: Any, key: str, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
            raise self.fail(key, "must be a positive number", found=value)
        return float(value)

    def tolerance(self, value: Any, key: str) -> dict[str, float]:
        tol = self.table(value, key, _TOL_KEYS)
        out = {}
        for k, v in tol.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise self.fail(f"{key}.{k}", "must be a number >= 0", found=v)
            out[k] = float(v)
        return out


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read and check a recipe file (default: ./tracefuse.toml); raises RecipeError naming the bad key and line."""
    path = Path(path or DEFAULT_RECIPE)
    if not path.is_file():
        raise RecipeError(f"no recipe at {path}", found="the file does not exist",
                          fix="write a tracefuse.toml (see docs/ci.md) or pass --recipe FILE")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read {path} as UTF-8 text", found=str(exc)[:200], fix="save it as UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path} is not valid TOML", found=str(exc), fix="fix the syntax at that line") from exc
    return parse_recipe(data, path, text)


def parse_recipe(data: dict[str, Any], path: Path, text: str = "") -> Recipe:
    """Check a parsed recipe dict and merge defaults into each model entry."""
    from tracefuse.exporters import FORMATS

    c = _Checker(path, text)
    c.table(data, "", _TOP_KEYS)
    ci = c.table(data.get("ci", {}), "ci", _CI_KEYS)
    jobs = ci.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise c.fail("ci.jobs", "must be an integer >= 1", found=jobs)
    for key in ("cache_dir", "work_dir"):
        if key in ci and not isinstance(ci[key], str):
            raise c.fail(f"ci.{key}", "must be a path string", found=ci[key])
    base = path.parent
    formats: dict[str, FormatVariant] = {name: FormatVariant(name, name) for name in FORMATS}
    for name, entry in c.table(data.get("formats", {}), "formats", _keys(data.get("formats", {}))).items():
        entry = c.table(entry, f"formats.{name}", _FORMAT_KEYS)
        fmt = entry.get("format", name)
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise c.fail(f"formats.{name}.format" if "format" in entry else f"formats.{name}",
                         f"names format '{fmt}', which is not registered", fix=f"use one of: {', '.join(FORMATS)}")
        options = c.table(entry.get("options", {}), f"formats.{name}.options", _keys(entry.get("options", {})))
        formats[name] = FormatVariant(name, fmt, dict(options))
    defaults = c.table(data.get("defaults", {}), "defaults", _CELL_KEYS)
    timeout = c.number(ci.get("timeout_s", 900), "ci.timeout_s")
    models_raw = data.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise c.fail("models", "must list at least one model as [[models]] with a source",
                     fix='add [[models]]\nsource = "tiny:bert"')
    models, seen = [], set()
    for i, raw in enumerate(models_raw):
        models.append(_model(c, raw, f"models[{i}]", defaults, formats, timeout))
        if models[-1].name in seen:
            raise c.fail(f"models[{i}].name", f"repeats the model name '{models[-1].name}'",
                         fix="give each entry a distinct name")
        seen.add(models[-1].name)
    return Recipe(path=path, models=tuple(models), formats=formats, jobs=jobs, timeout_s=timeout,
                  cache_dir=base / ci.get("cache_dir", ".tracefuse-cache"),
                  work_dir=base / ci.get("work_dir", "build/ci"))


def _model(c: _Checker, raw: Any, key: str, defaults: dict[str, Any], formats: dict[str, FormatVariant],
           timeout: float) -> ModelEntry:
    from tracefuse.runtimes import RUNTIMES

    raw = c.table(raw, key, _MODEL_KEYS)
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise c.fail(f"{key}.source", "must be a model source string (tiny:bert, a directory, module:factory)",
                     found=source)
    merged = {**defaults, **{k: v for k, v in raw.items() if k in _CELL_KEYS}}
    fmts = c.names(merged.get("formats", ["onnx"]), f"{key}.formats" if "formats" in raw else "defaults.formats")
    for f in fmts:
        if f not in formats:
            raise c.fail(f"{key}.formats" if "formats" in raw else "defaults.formats", f"names unknown format '{f}'",
                         fix=f"use one of: {', '.join(formats)}, or define it under [formats.{f}]")
    rts = c.names(merged.get("runtimes", ["ort-cpu"]),
                  f"{key}.runtimes" if "runtimes" in raw else "defaults.runtimes")
    for r in rts:
        if r not in RUNTIMES:
            raise c.fail(f"{key}.runtimes" if "runtimes" in raw else "defaults.runtimes",
                         f"names unknown runtime '{r}'", fix=f"use one of: {', '.join(RUNTIMES)}")
    presets = c.names(merged.get("presets", [NO_PRESET]), f"{key}.presets" if "presets" in raw else "defaults.presets")
    tol = {**c.tolerance(defaults.get("tolerance", {}), "defaults.tolerance"),
           **c.tolerance(raw.get("tolerance", {}), f"{key}.tolerance")}
    options = {**c.table(defaults.get("options", {}), "defaults.options", set(defaults.get("options", {}))),
               **c.table(raw.get("options", {}), f"{key}.options", set(raw.get("options", {})))}
    task = merged.get("task")
    if task is not None and not isinstance(task, str):
        raise c.fail(f"{key}.task", "must be a task name string", found=task)
    name = raw.get("name", source.split(":")[-1].rstrip("/").split("/")[-1])
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise c.fail(f"{key}.name", "must be letters, digits, '.', '_' or '-'", found=name)
    t = merged.get("timeout_s", timeout)
    t = c.number(t, f"{key}.timeout_s" if "timeout_s" in raw else "defaults.timeout_s")
    overrides_raw = raw.get("overrides", [])
    if not isinstance(overrides_raw, list):
        raise c.fail(f"{key}.overrides", "must be an array of tables ([[models.overrides]])", found=overrides_raw)
    overrides = []
    for j, o in enumerate(overrides_raw):
        okey = f"{key}.overrides[{j}]"
        o = c.table(o, okey, _OVERRIDE_KEYS)
        for k, allowed in (("format", fmts), ("runtime", rts), ("preset", presets)):
            if k in o and o[k] not in allowed:
                raise c.fail(f"{okey}.{k}", f"matches no cell of this model: '{o[k]}' is not in its {k}s",
                             fix=f"use one of: {', '.join(allowed)}")
        overrides.append(Override(
            format=o.get("format"), runtime=o.get("runtime"), preset=o.get("preset"),
            tolerance=c.tolerance(o.get("tolerance", {}), f"{okey}.tolerance"),
            options=dict(c.table(o.get("options", {}), f"{okey}.options", set(o.get("options", {})))),
            timeout_s=c.number(o["timeout_s"], f"{okey}.timeout_s") if "timeout_s" in o else None,
        ))
    return ModelEntry(name=name, source=source, task=task, formats=fmts, runtimes=rts, presets=presets,
                      tolerance=tol, options=options, timeout_s=t, overrides=tuple(overrides))
