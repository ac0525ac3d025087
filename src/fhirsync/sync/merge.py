"""Three-way merge of one record: base (last agreed), local (this node) and remote (the parent).

Pure functions over JSON values. Fields are compared by JSON path:

- a field changed on one side only takes that side's value; changed alike on both, it is kept;
- objects are merged key by key;
- lists of objects that carry an identity (``id``; ``system`` + ``use``; ``system`` + ``value``;
  ``system`` + ``code``; ``url``; ``use``) are matched by that identity, not by position, so a
  telephone added on one side and a name changed on the other both survive. Other lists are
  single values;
- a field changed differently on both sides (or removed on one side and changed on the other) is a
  :class:`FieldConflict`, decided by ``choices`` (path → value) or ``prefer`` when given.

The record's state (active, voided, ...) is the pseudo-field ``@state``. A void on one side against
an edit of the body on the other is a conflict on ``@state`` (DESIGN §5 promise 6), never a silent
resurrection or loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

STATE_PATH = "@state"
_IDENTITY_KEYS: tuple[tuple[str, ...], ...] = (
    ("id",),
    ("system", "use"),
    ("system", "value"),
    ("system", "code"),
    ("url",),
    ("use",),
)


class _Missing:
    """An absent field (distinct from JSON null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
"""The value of a field a side does not have; a choice of MISSING removes the field."""

Prefer = Literal["local", "remote"]


@dataclass(frozen=True, slots=True)
class Side:
    """One version of a record: its (unified) body and its state."""

    body: Mapping[str, Any]
    state: str = "active"


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A field both sides changed differently (values may be MISSING)."""

    path: str
    base: Any
    local: Any
    remote: Any


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged record and what the merge found."""

    body: dict[str, Any]
    """The merged body; an undecided conflict keeps the local value."""
    state: str
    conflicts: tuple[FieldConflict, ...]
    """Every field changed differently on both sides (decided or not)."""
    unresolved: tuple[str, ...]
    """Paths of conflicts no choice or preference decided."""
    from_remote: tuple[str, ...]
    """Paths where the parent's change was taken over the local value."""

    @property
    def clean(self) -> bool:
        """True when nothing is left for a person to decide."""
        return not self.unresolved


@dataclass
class _Walk:
    choices: Mapping[str, Any]
    prefer: Prefer | None
    conflicts: list[FieldConflict] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    from_remote: list[str] = field(default_factory=list)

    def decide(self, path: str, base: Any, local: Any, remote: Any) -> Any:
        self.conflicts.append(FieldConflict(path, base, local, remote))
        if path in self.choices:
            return self.choices[path]
        if self.prefer == "remote":
            self.from_remote.append(path)
            return remote
        if self.prefer == "local":
            return local
        self.unresolved.append(path)
        return local


def merge(
    base: Side | None,
    local: Side,
    remote: Side,
    *,
    choices: Mapping[str, Any] | None = None,
    prefer: Prefer | None = None,
) -> MergeResult:
    """Merge ``local`` and ``remote`` against ``base`` (None: no agreed version, every difference
    conflicts). ``choices`` decides conflicts by path; ``prefer`` decides the rest."""
    walk = _Walk(choices or {}, prefer)
    base_body: Mapping[str, Any] = base.body if base is not None else {}
    base_state = base.state if base is not None else None
    body = _merge_value("", base_body, local.body, remote.body, walk)
    state = _merge_state(base_body, base_state, local, remote, walk)
    return MergeResult(
        dict(body) if isinstance(body, Mapping) else {},
        state,
        tuple(walk.conflicts),
        tuple(walk.unresolved),
        tuple(walk.from_remote),
    )


def _merge_state(
    base_body: Mapping[str, Any], base_state: str | None, local: Side, remote: Side, walk: _Walk
) -> str:
    if local.state == remote.state:
        return local.state
    local_edited = local.body != base_body
    remote_edited = remote.body != base_body
    if base_state == local.state and not local_edited:
        walk.from_remote.append(STATE_PATH)
        return remote.state
    if base_state == remote.state and not remote_edited:
        return local.state
    # Both states moved apart, or one side changed its state while the other edited the body.
    chosen = walk.decide(STATE_PATH, base_state or MISSING, local.state, remote.state)
    return str(chosen)


def _merge_value(path: str, base: Any, local: Any, remote: Any, walk: _Walk) -> Any:
    if local == remote and type(local) is type(remote):
        return local
    if base == local and type(base) is type(local):
        if path:
            walk.from_remote.append(path)
        return remote
    if base == remote and type(base) is type(remote):
        return local
    if _all(dict, base, local, remote):
        return _merge_objects(path, _or(base, {}), _or(local, {}), _or(remote, {}), walk)
    if _all(list, base, local, remote):
        keyed = _keyed_lists(_or(base, []), _or(local, []), _or(remote, []))
        if keyed is not None:
            return _merge_keyed(path, *keyed, walk)
    return walk.decide(path or "(body)", base, local, remote)


def _all(kind: type, base: Any, local: Any, remote: Any) -> bool:
    """True when every present side is a ``kind`` (dict: any Mapping) and local/remote are."""
    check: Callable[[Any], bool] = (
        (lambda v: isinstance(v, Mapping)) if kind is dict else (lambda v: isinstance(v, list))
    )
    return check(local) and check(remote) and (base is MISSING or check(base))


def _or(value: Any, default: Any) -> Any:
    return default if value is MISSING else value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge_objects(
    path: str,
    base: Mapping[str, Any],
    local: Mapping[str, Any],
    remote: Mapping[str, Any],
    walk: _Walk,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _ordered_keys(local, remote, base):
        value = _merge_value(
            _join(path, key),
            base.get(key, MISSING),
            local.get(key, MISSING),
            remote.get(key, MISSING),
            walk,
        )
        if value is not MISSING:
            out[key] = value
    return out


def _ordered_keys(*maps: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(k for m in maps for k in m))


def identity(item: Any) -> str | None:
    """The identity of a list element (``system=x,use=y``), or None when it has none."""
    if not isinstance(item, Mapping):
        return None
    for keys in _IDENTITY_KEYS:
        values = [item.get(k) for k in keys]
        if all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            return ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
    return None


_Keyed = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def _keyed_lists(base: list[Any], local: list[Any], remote: list[Any]) -> _Keyed | None:
    """The three lists as identity → element maps, or None when they cannot be matched.

    One identity rule is used for all three lists (the first that names every element of each
    list uniquely), so an element matches the same element on every side.
    """
    items = [*base, *local, *remote]
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    for keys in _IDENTITY_KEYS:
        maps = [_by_keys(lst, keys) for lst in (base, local, remote)]
        if all(m is not None for m in maps):
            b, lo, r = maps
            assert b is not None and lo is not None and r is not None
            return b, lo, r
    return None


def _by_keys(items: Sequence[Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for item in items:
        values = [item.get(k) for k in keys]
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            return None
        ident = ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        if ident in out:
            return None
        out[ident] = item
    return out


def _merge_keyed(
    path: str, base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any], walk: _Walk
) -> list[Any]:
    out: list[Any] = []
    for ident in _ordered_keys(local, remote, base):
        value = _merge_value(
            f"{path}[{ident}]",
            base.get(ident, MISSING),
            local.get(ident, MISSING),
            remote.get(ident, MISSING),
            walk,
        )
        if value is not MISSING:
            out.append(value)
    return out


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path, in the path notation of :func:`merge` (for side-by-side views)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, _join(path, key)))
        return out or {path: {}}
    if isinstance(value, list) and value:
        keyed = _by_first_rule(value)
        if keyed is not None:
            flat: dict[str, Any] = {}
            for ident, item in keyed.items():
                flat.update(flatten(item, f"{path}[{ident}]"))
            return flat
    return {path: value}


def _by_first_rule(items: list[Any]) -> dict[str, Any] | None:
    if not all(isinstance(i, Mapping) for i in items):
        return None
    for keys in _IDENTITY_KEYS:
        found = _by_keys(items, keys)
        if found is not None:
            return found
    return None
