"""The OpenAPI description is valid, and says exactly which operations the app serves."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from openapi_spec_validator import validate

from gateway.web import create_app
from gateway.web.api import API_PREFIX
from tests.factories import make_settings

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def spec() -> dict[str, object]:
    text = resources.files("gateway.web").joinpath("openapi.yaml").read_text("utf-8")
    loaded: dict[str, object] = yaml.safe_load(text)
    return loaded


def test_the_description_is_valid_openapi_3_1() -> None:
    document = spec()
    assert str(document["openapi"]).startswith("3.1")
    validate(document)


def test_docs_openapi_is_a_relative_symlink_to_the_packaged_file() -> None:
    link = ROOT / "docs" / "openapi.yaml"
    assert link.is_symlink()
    assert not Path(link.readlink()).is_absolute()
    assert link.resolve() == (ROOT / "gateway" / "web" / "openapi.yaml").resolve()


def test_the_description_and_the_router_name_the_same_operations() -> None:
    app = create_app(make_settings())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith(f"{API_PREFIX}/")
    }
    paths = spec()["paths"]
    assert isinstance(paths, dict)
    described = {
        (method, path) for path, item in paths.items() for method in item if method in METHODS
    }
    assert served == described


def test_every_protected_operation_names_its_scope_and_401_403() -> None:
    paths = spec()["paths"]
    assert isinstance(paths, dict)
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in METHODS or operation.get("security") == []:
                continue
            assert "Scope: `" in operation["description"], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
