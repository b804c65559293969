"""Fuzzing the CI recipe parser (tracefuse.toml): every input is a Recipe or a TracefuseError, also after expansion."""

from __future__ import annotations

import copy
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.jobs.test_recipe import GOOD
from tracefuse.errors import TracefuseError
from tracefuse.jobs.matrix import expand
from tracefuse.jobs.recipe import load_recipe, parse_recipe

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
GOOD_DATA = tomllib.loads(GOOD)

toml_values = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)


def _paths(data, prefix=()):
    """Every key path in a parsed recipe (dict keys and list indices)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


PATHS = sorted(_paths(GOOD_DATA), key=str)


def _check(data, text: str = "") -> None:
    try:
        recipe = parse_recipe(data, Path("/tmp/tracefuse.toml"), text)
        expand(recipe)
    except TracefuseError:
        pass


@FUZZ
@given(st.sampled_from(PATHS), toml_values)
def test_recipe_with_one_value_replaced(path, value):
    data = copy.deepcopy(GOOD_DATA)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _check(data, GOOD)


@FUZZ
@given(st.dictionaries(st.sampled_from(["ci", "defaults", "formats", "models", "other"]), toml_values, max_size=4))
def test_recipe_from_arbitrary_tables(data):
    _check(data)


@FUZZ
@given(st.binary(max_size=300) | st.sampled_from(GOOD.splitlines()).flatmap(
    lambda line: st.text(max_size=40).map(lambda junk: GOOD.replace(line, junk, 1)).map(str.encode)))
def test_load_recipe_from_arbitrary_bytes(blob):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tracefuse.toml"
        path.write_bytes(blob)
        try:
            expand(load_recipe(path))
        except TracefuseError:
            pass
