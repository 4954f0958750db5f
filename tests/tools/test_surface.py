"""The public surface (OpenAPI spec, `--help` of every command line, metric names) equals the
stored copies in docs/openapi.json and tests/surface/: a contract change must come with a
visible diff of those files (`python -m tools.surface --write` regenerates them)."""
from __future__ import annotations

import pytest

from tools import surface


def _check(files: dict) -> None:
    problems = surface.diff(files)
    assert not problems, ("the public surface changed; if you meant it, run "
                          "`python -m tools.surface --write` and commit the diff:\n" + "".join(problems))


def test_openapi_spec_and_metric_names_match_the_stored_copies():
    _check(surface.current(with_help=False))


def test_help_of_every_command_matches_the_stored_copy():
    if not surface.HELP_DIR.is_dir():
        pytest.skip(f"help stored for another Python minor than {surface.HELP_PYTHON} (argparse layout)")
    files = surface.current()
    assert len([p for p in files if p.parent == surface.HELP_DIR]) >= 20  # every CLI was found
    _check(files)


def test_the_openapi_dump_does_not_depend_on_where_it_runs():
    text = surface.openapi_text()
    assert str(surface.ROOT) not in text and "/tmp" not in text
    assert text == surface.openapi_text()  # deterministic: keys sorted, nothing random


def test_no_two_response_or_request_models_share_a_name():
    """Two pydantic models of the same class name make FastAPI rename BOTH schemas to
    `gateway__<module>__<Name>`: the existing route's schema changes name under its clients'
    feet (the endless aisle's first `DeliveryOut` and `TubeOut` did that to the webhooks' and the
    analytics' ones). Name a new model after its tier (`AisleDeliveryOut`)."""
    import json

    spec = json.loads((surface.ROOT / "docs" / "openapi.json").read_text())
    assert [n for n in spec["components"]["schemas"] if "__" in n] == []
