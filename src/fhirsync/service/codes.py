"""The codes of required bindings (:mod:`fhirsync.service.bindings`) checked in a resource.

Two checks that always agree: :func:`check_codes` runs one pass over a tree of the rules merged by
path prefix, fast in the common all-valid case, and hands anything else to
:func:`check_codes_in_order`, the walk of the rules in table order that finds and words the first
error (``tests/unit/service/test_validation.py`` holds them to the same outcome).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from fhirsync.errors import InvalidResource
from fhirsync.service.bindings import CODE_RULES, CONCEPT_RULES, IDENTIFIER_RULES, Path

__all__ = ["check_codes", "check_codes_in_order"]


def check_codes(resource: Mapping[str, Any]) -> None:
    """Raise InvalidResource for the first code outside its required value set."""
    if not _codes_ok(resource, _code_tree(resource["resourceType"])):
        check_codes_in_order(resource)


class _CodeNode:
    """One step of the code rules of a resource type, merged into a tree by path prefix."""

    __slots__ = ("children", "codes", "concept")

    def __init__(self) -> None:
        self.codes: frozenset[str] | None = None
        self.children: dict[str, _CodeNode] = {}
        self.concept: tuple[str, frozenset[str]] | None = None


@lru_cache(maxsize=256)
def _code_tree(resource_type: str) -> Mapping[str, _CodeNode]:
    root: dict[str, _CodeNode] = {}

    def node_at(path: Path) -> _CodeNode:
        level = root
        node = _CodeNode()
        for step in path:
            node = level.setdefault(step, _CodeNode())
            level = node.children
        return node

    for path, codes in (*CODE_RULES.get(resource_type, ()), *IDENTIFIER_RULES):
        leaf = node_at(path)
        leaf.codes = codes if leaf.codes is None else leaf.codes & codes
    for path, system, codes in CONCEPT_RULES.get(resource_type, ()):
        node_at((*path, "coding")).concept = (system, codes)
    return root


def _codes_ok(node: Mapping[str, Any], tree: Mapping[str, _CodeNode]) -> bool:
    """True if every code the rules reach is valid; False means "let the ordered walk decide".

    The common case (all codes fine) in one pass over a merged tree; anything odd (a code that
    is not a ``str``, a list in a list, a mapping that is not a dict) answers False, and
    :func:`check_codes_in_order` then finds and words the first error exactly as before.
    """
    for key, rule in tree.items():
        child = node.get(key)
        if child is None:
            continue
        codes = rule.codes
        for item in child if type(child) is list else (child,):
            kind = type(item)
            if kind is str:
                if codes is not None and item not in codes:
                    return False
                continue
            if codes is not None or kind is list:
                return False
            if kind is not dict:
                if isinstance(item, Mapping):
                    return False
                continue
            if rule.children and not _codes_ok(item, rule.children):
                return False
            if rule.concept is not None and item.get("system") == rule.concept[0]:
                code = item.get("code")
                if type(code) is not str or code not in rule.concept[1]:
                    return False
    return True


def check_codes_in_order(resource: Mapping[str, Any]) -> None:
    """The rules in table order: InvalidResource naming the first code outside its value set."""
    resource_type: str = resource["resourceType"]
    identifier_rules = IDENTIFIER_RULES if "identifier" in resource else ()
    for path, codes in (*CODE_RULES.get(resource_type, ()), *identifier_rules):
        for where, value in _walk(resource, path, resource_type):
            if value not in codes:
                raise InvalidResource(
                    f"{value!r} is not a valid code for {where} "
                    f"(expected one of: {', '.join(sorted(codes))})",
                    element=where,
                )
    for path, system, codes in CONCEPT_RULES.get(resource_type, ()):
        for where, coding in _walk(resource, (*path, "coding"), resource_type):
            if not isinstance(coding, Mapping) or coding.get("system") != system:
                continue
            if coding.get("code") not in codes:
                raise InvalidResource(
                    f"{coding.get('code')!r} is not a valid code of {system} "
                    f"(expected one of: {', '.join(sorted(codes))})",
                    element=f"{where}.code",
                )


def _walk(node: Any, path: Path, where: str) -> Iterator[tuple[str, Any]]:
    """Every value at ``path`` under ``node``, stepping through lists, with its element name."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, path, f"{where}[{index}]")
        return
    if not path:
        yield where, node
        return
    if isinstance(node, Mapping):
        child = node.get(path[0])
        if child is not None:
            yield from _walk(child, path[1:], f"{where}.{path[0]}")
