"""The package recipes, one module each (see embedbuild/recipe.py for what a recipe
declares). Adding a package is adding a module here and its test."""

from __future__ import annotations

import importlib
import pkgutil

from embedbuild.recipe import REGISTRY, Recipe, closure


def registry() -> dict[str, Recipe]:
    """Every recipe by name (the modules of this package, imported once)."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")
    return REGISTRY


def userland(packages: list[str]) -> list[Recipe]:
    """The recipes a system is made of: the base ones (busybox), then the listed ones,
    each after the libraries it links."""
    reg = registry()
    base = sorted(n for n, r in reg.items() if r.base)
    return [reg[n] for n in closure(reg, [*base, *packages])]


def load_context() -> dict:
    """What the loader validates a system's packages and services against: each
    package's kind ("base", "libc", "library" or "program") and the services packages
    offer (service name -> (package, its fields))."""
    reg = registry()
    kinds = {n: "base" if r.base else "libc" if r.libc else "library" if r.library
             else "program" for n, r in reg.items()}
    services = {svc: (n, dict(fields)) for n, r in reg.items()
                for svc, fields in r.services.items()}
    return {"packages": kinds, "services": services}
