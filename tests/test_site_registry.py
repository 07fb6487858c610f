"""The page registry is the one table of pages: every page builds through it, and every
template reads only what its page's build gives it — top-level names, `c.` fields of its
typed context, `charts.` URLs (a contract: a renamed field fails here, not in a browser)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from jinja2 import meta, nodes

from common.store import db
from site_builder import build, output, publish, registry, render
from tests import site_data

BASE = ("refresh", "static", "nav", "stale_s")  # what build_page adds to every page


def _template_ast(name: str) -> list[nodes.Template]:
    """The template and the ones it extends."""
    env = render.environment()
    assert env.loader is not None
    out = []
    while name:
        source = env.loader.get_source(env, name)[0]
        ast = env.parse(source)
        out.append(ast)
        parent = next(iter(ast.find_all(nodes.Extends)), None)
        name = parent.template.value if parent is not None else ""  # type: ignore[attr-defined]
    return out


def _imported(asts: list[nodes.Template]) -> set[str]:
    """Names the templates define themselves: macros imported (`{% from … import … %}`)
    or written, and `{% set %}` names (Jinja's scan sees blocks apart from them)."""
    out: set[str] = set()
    for ast in asts:
        for n in ast.find_all(nodes.FromImport):
            out |= {name if isinstance(name, str) else name[1] for name in n.names}
        out |= {m.name for m in ast.find_all(nodes.Macro)}
        for a in ast.find_all((nodes.Assign, nodes.AssignBlock)):
            out |= {t.name for t in a.target.find_all(nodes.Name)}
            if isinstance(a.target, nodes.Name):
                out.add(a.target.name)
    return out


def _attributes(asts: list[nodes.Template], variable: str) -> set[str]:
    return {
        n.attr
        for ast in asts
        for n in ast.find_all(nodes.Getattr)
        if isinstance(n.node, nodes.Name) and n.node.name == variable
    }


@pytest.fixture
def loaded(conn: db.Conn) -> db.Conn:
    users = site_data.load(conn)
    site_data.add_real_copy(conn, users[0])  # the first user page shows its real copy too
    return conn


def test_every_template_reads_only_what_its_build_gives(loaded: db.Conn, tmp_path: Path) -> None:
    site = output.Site(publish.Publisher(tmp_path))
    env = render.environment()
    checked = 0
    for page in registry.PAGES:
        subjects = list(page.every(loaded, site_data.NOW)) if page.every else [""]
        assert subjects, f"the test dataset has no {page.kind} page"
        built = page.build(loaded, site, subjects[0], site_data.NOW, registry.Options())
        assert built is not None
        assert isinstance(built["c"], page.context)
        asts = _template_ast(page.template)
        names = set().union(*(meta.find_undeclared_variables(a) for a in asts))
        missing = names - set(built) - set(BASE) - set(env.globals) - _imported(asts)
        assert not missing, f"{page.template} reads {sorted(missing)} that its build lacks"
        fields = {f.name for f in dataclasses.fields(page.context)}
        unknown = {a for a in _attributes(asts, "c") if a not in fields}
        unknown = {a for a in unknown if not hasattr(page.context, a)}
        assert not unknown, f"{page.template} reads c.{sorted(unknown)}, not in {page.context}"
        if "charts" in built:
            assert _attributes(asts, "charts") <= set(built["charts"]), page.template
        checked += 1
    assert checked == len(registry.PAGES) >= 10


def test_a_renamed_field_breaks_the_contract() -> None:
    """The check above can fail: a template reading a field no context has is caught."""
    env = render.environment()
    ast = env.parse("{{ c.no_such_field }}{{ other }}")
    assert _attributes([ast], "c") == {"no_such_field"}
    assert meta.find_undeclared_variables(ast) == {"c", "other"}


def test_build_and_invalidation_name_only_registered_pages() -> None:
    kinds = {p.kind for p in registry.PAGES}
    assert set(build.RANK) == kinds
    assert kinds >= registry.HOT
    for page in registry.PAGES:
        assert page.inputs or page.touched or page.every, page.kind
        if page.every is None:
            assert not page.touched, f"{page.kind}: one file has no subjects"
