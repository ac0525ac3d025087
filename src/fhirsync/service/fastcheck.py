"""A fast, conservative check that fhir.resources would accept a FHIR resource dict.

fhir.resources validates every nested element through pydantic with Python-level validators
(``reject_null_complex_elements``, the required-primitive and choice checks, one
``model_validate`` per nested model), about 150 µs for a 1.6 KB Patient. Nearly every record a
node receives is plainly valid, so :func:`fast_accepts` walks the dict with rules compiled once per
model class from the R4B model metadata (``model_fields``: alias, annotation, ``is_required``;
``get_required_fields()``; ``get_one_of_many_fields()`` with the ``one_of_many_required`` flag;
``extra="forbid"``) without calling pydantic.

It answers True only when the model is certain to accept the dict, and False for "not sure": the
caller then runs the full model validation, which also words the error and does the lenient
list-wrapping repair. "Not sure" covers, by design:

- keys that are not element names of the model (unknown keys, ``_field`` primitive extensions,
  ``fhir_comments``, Python field names such as ``class_fhir``, ``resourceType`` below the root);
- ``None`` anywhere, empty lists, objects and strings, a lone object where a list is expected;
- contained resources and other polymorphic resources, ``uuid`` values, and any annotation shape
  without a rule here;
- a missing required element, two values of one choice group, a missing required choice;
- primitive values outside the rule of their type. Each rule is the fhir_core rule
  (``fhir_core/types.py``) or stricter: strings have no leading or trailing whitespace and encode
  as UTF-8; ``code`` and ``id`` use fhir_core's patterns (``id`` at most 64 characters, the FHIR
  limit); ``uri``, ``url`` and ``canonical`` have no whitespace at all; integers are ``int`` (never
  ``bool``) within the type's bounds; decimals are ``int`` or ``float`` matching fhir_core's
  pattern; ``date``, ``dateTime``, ``instant`` and ``time`` match fhir_core's patterns, full dates
  are real calendar dates, and leap seconds and fractions of more than 9 digits are left to the
  model; ``base64Binary`` is canonical base64.

The required property, tested against the models by ``tests/unit/service/test_fastcheck.py``:
``fast_accepts(model, x)`` implies ``model.model_validate(x)`` succeeds.
"""

from __future__ import annotations

import datetime
import decimal
import re
import threading
from collections.abc import Callable
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fhir.resources.R4B.resource import Resource
from fhir_core import constraints as fhir_constraints
from fhir_core import types as fhir_types
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.types import Base64Encoder, EncodedBytes

__all__ = ["fast_accepts"]

Check = Callable[[Any], bool]

# The FHIR limit; fhir_core allows up to TYPES_ID_MAX_LENGTH (255), so this is stricter.
_ID_MAX = min(64, fhir_constraints.TYPES_ID_MAX_LENGTH)
_ID = re.compile(fhir_constraints.TYPES_ID_PATTERN)
# fhir_core.types.Code's pattern. Python's ``\s`` covers every character Rust's regex (used by
# pydantic) counts as whitespace and more, so a Python full match implies pydantic's match.
_CODE = re.compile(r"^[^\s]+(\s[^\s]+)*$")
_NO_SPACE = re.compile(r"\S+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_MAX_FRACTION = 9
_MEMO_MAX = 4096
_MISSING = object()
# Ints whose decimal string fhir_core's Decimal pattern always matches (and int->str stays cheap).
_DECIMAL_INT_BOUND = 10**15


def _never(value: Any) -> bool:
    """The rule for element types this module does not reproduce: always "not sure"."""
    return False


def _text(value: Any) -> bool:
    """A non-empty ``str`` without leading or trailing whitespace that encodes as UTF-8.

    Its first character is then not whitespace for Python, hence not for Rust's regex either, so
    fhir_core's String pattern (``[ \\r\\n\\t\\S]+``, searched) matches it.
    """
    if type(value) is not str or value.strip() != value or not value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # lone surrogates cannot be handed to pydantic-core
    except UnicodeEncodeError:
        return False
    return True


def _remembered(rule: Check) -> Check:
    """``rule`` with a bounded memo of the strings it accepted: codes and URIs repeat a lot."""
    known: set[str] = set()

    def check(value: Any) -> bool:
        if type(value) is str and value in known:
            return True
        if not rule(value):
            return False
        if len(known) < _MEMO_MAX:
            known.add(value)
        return True

    return check


@_remembered
def _code(value: Any) -> bool:
    return _text(value) and _CODE.fullmatch(value) is not None


def _id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _ID_MAX and _ID.fullmatch(value) is not None


@_remembered
def _uri(value: Any) -> bool:
    return _text(value) and _NO_SPACE.fullmatch(value) is not None


def _oid(value: Any) -> bool:
    return type(value) is str and fhir_types.Oid.pattern.fullmatch(value) is not None


def _base64(value: Any) -> bool:
    return type(value) is str and value != "" and _BASE64.fullmatch(value) is not None


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _decimal(value: Any) -> bool:
    if type(value) is int:
        return -_DECIMAL_INT_BOUND < value < _DECIMAL_INT_BOUND
    # fhir_core matches str(value) against its pattern; that rejects nan and inf too.
    return type(value) is float and fhir_types.Decimal.pattern.fullmatch(str(value)) is not None


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> bool:
        return type(value) is int and low <= value <= high

    return check


def _calendar_date(text: str) -> bool:
    """``YYYY-MM-DD`` (already matched by a fhir_core pattern) is a real date."""
    try:
        datetime.date.fromisoformat(text[:10])
    except ValueError:
        return False
    return True


def _clock(text: str, seconds_at: int) -> bool:
    """No leap second (kept as a string by fhir_core) and a fraction of at most 9 digits."""
    if text[seconds_at : seconds_at + 2] == "60":
        return False
    dot = text.find(".", seconds_at)
    if dot < 0:
        return True
    digits = 0
    for char in text[dot + 1 :]:
        if not char.isdigit():
            break
        digits += 1
    return digits <= _MAX_FRACTION


def _date(value: Any) -> bool:
    if type(value) is not str or fhir_types.Date.pattern.fullmatch(value) is None:
        return False
    return len(value) < 10 or _calendar_date(value)


def _date_time(value: Any) -> bool:
    if type(value) is not str or fhir_types.DateTime.pattern.fullmatch(value) is None:
        return False
    if len(value) < 10:
        return True  # a partial date: the pattern already bounds the month
    if not _calendar_date(value):
        return False
    return len(value) == 10 or _clock(value, 17)


def _instant(value: Any) -> bool:
    if type(value) is not str or fhir_types.Instant.pattern.fullmatch(value) is None:
        return False
    return _calendar_date(value) and _clock(value, 17)


def _time(value: Any) -> bool:
    if type(value) is not str or fhir_types.Time.pattern.fullmatch(value) is None:
        return False
    return _clock(value, 6)


# Rules by the exact class of the fhir_core metadata in ``Annotated[<python type>, <metadata>]``
# (exact: Canonical subclasses Uri, Instant subclasses DateTime, PositiveInt subclasses Integer).
_BY_METADATA: dict[type[Any], tuple[type[Any], Check]] = {
    fhir_types.String: (str, _text),
    fhir_types.Markdown: (str, _text),
    fhir_types.Xhtml: (str, _text),
    fhir_types.Code: (str, _code),
    fhir_types.Id: (str, _id),
    fhir_types.Uri: (str, _uri),
    fhir_types.Canonical: (str, _uri),
    fhir_types.Oid: (str, _oid),
    fhir_types.Date: (datetime.date, _date),
    fhir_types.DateTime: (datetime.datetime, _date_time),
    fhir_types.Instant: (datetime.datetime, _instant),
    fhir_types.Time: (datetime.time, _time),
}
_INTEGERS = (
    fhir_types.Integer,
    fhir_types.UnsignedInt,
    fhir_types.PositiveInt,
    fhir_types.Integer64,
)

_CHECKS: dict[type[Any], Check] = {}
_LOCK = threading.Lock()


def fast_accepts(model: type[FHIRAbstractModel], data: Any) -> bool:
    """True only if ``model.model_validate(data)`` certainly succeeds; False means "not sure".

    ``model`` is a fhir.resources R4B resource class (``Patient``, ...); rules for it and every
    element type it reaches are compiled on the first call and kept for the process.
    """
    check = _CHECKS.get(model)
    if check is None:
        with _LOCK:
            check = _compile(model)
    try:
        return check(data)
    except RecursionError:  # absurdly deep nesting: the model decides
        return False


def prepare(model: type[FHIRAbstractModel]) -> None:
    """Compile the rules of ``model`` now instead of on its first :func:`fast_accepts`."""
    with _LOCK:
        if model not in _CHECKS:
            _compile(model)


def _compile(model: type[Any]) -> Check:
    """The check for a dict of ``model`` (registered before its fields, for recursive types)."""
    known = _CHECKS.get(model)
    if known is not None:
        return known
    if not _reproducible(model):
        _CHECKS[model] = _never
        return _never
    fields: dict[str, Check] = {}
    required = _required(model)
    groups = _choice_groups(model)

    def check(value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        try:
            for key, item in value.items():
                if not fields[key](item):
                    return False
        except KeyError:  # an unknown key (no rule raises KeyError otherwise)
            return False
        keys = value.keys()
        if required and not keys >= required:
            return False
        for group, needed in groups:
            found = len(keys & group)
            if found > 1 or (needed and found == 0):
                return False
        return True

    # A partly filled ``fields`` only makes the check answer False more often, so registering
    # first is safe even if a compile were interrupted.
    _CHECKS[model] = check
    for info in model.model_fields.values():
        extra = info.json_schema_extra
        if not isinstance(extra, dict) or extra.get("element_property") is not True:
            continue  # ``_field`` extensions, fhir_comments: left to the model
        if info.alias is None:
            continue
        aliases_agree = info.validation_alias in (None, info.alias)
        fields[info.alias] = _field_check(info) if aliases_agree else _never
    if issubclass(model, Resource):
        resource_type = model.get_resource_type()
        fields["resourceType"] = lambda value: type(value) is str and value == resource_type
    return check


# What the rules here assume of every model: fhir_core's configuration, validators and the
# methods that run during validation, none overridden. Anything else is not reproduced.
_CONFIG = {"extra": "forbid", "validate_assignment": True, "populate_by_name": True}
_MODEL_VALIDATORS = {"reject_null_complex_elements", "validate_after_model_construction"}
_INHERITED = (
    "__init__",
    "model_validate",
    "reject_null_complex_elements",
    "validate_after_model_construction",
    "_validate_one_of_many",
    "_validate_required_primitive_elements",
)


def _reproducible(model: type[Any]) -> bool:
    """``model`` validates the way the rules here reproduce (else its check is "not sure")."""
    if not issubclass(model, FHIRAbstractModel):
        return False
    if any(_CONFIG.get(key, _MISSING) != value for key, value in model.model_config.items()):
        return False
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.root_validators:
        return False
    if set(decorators.model_validators) != _MODEL_VALIDATORS:
        return False
    for name in _INHERITED:
        owner = next(klass for klass in model.__mro__ if name in klass.__dict__)
        if owner not in (FHIRAbstractModel, BaseModel):
            return False
    return True


def _required(model: type[Any]) -> frozenset[str]:
    names = {info.alias or name for name, info in model.model_fields.items() if info.is_required()}
    instance = model.model_construct()
    names.update(name for name, _ext in instance.get_required_fields())
    return frozenset(names)


def _choice_groups(model: type[Any]) -> tuple[tuple[frozenset[str], bool], ...]:
    instance = model.model_construct()
    out: list[tuple[frozenset[str], bool]] = []
    for names in instance.get_one_of_many_fields().values():
        infos = [model.model_fields[name] for name in names]
        first = infos[0].json_schema_extra
        needed = isinstance(first, dict) and first.get("one_of_many_required") is True
        aliases = frozenset(info.alias or name for name, info in zip(names, infos, strict=True))
        out.append((aliases, needed))
    return tuple(out)


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged (other unions have no rule)."""
    if get_origin(annotation) in (Union, UnionType):
        options = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(options) == 1:
            return options[0]
    return annotation


def _field_check(info: FieldInfo) -> Check:
    if info.metadata:
        return _never  # constraints outside the annotation: none in R4B, so not reproduced
    annotation = _strip_optional(info.annotation)
    if get_origin(annotation) is list:
        item = _value_check(_strip_optional(get_args(annotation)[0]))
        if item is _never:
            return _never
        return _list_of(item)
    return _value_check(annotation)


def _list_of(item: Check) -> Check:
    def check(value: Any) -> bool:
        if type(value) is not list or not value:
            return False
        for element in value:  # noqa: SIM110 - all() over a generator is slower on this hot path
            if not item(element):
                return False
        return True

    return check


def _value_check(annotation: Any) -> Check:
    if annotation is bool:
        return _boolean
    if get_origin(annotation) is Annotated:
        return _primitive_check(get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, fhir_types.FhirBase):
        # Contained resources and Bundle entries pick their model by resourceType: left out.
        if issubclass(annotation, fhir_types.FhirElementOrResourceBase):
            return _never
        target = annotation.get_model_klass()
        if issubclass(target, Resource):
            return _never
        return _compile(target)
    return _never


def _primitive_check(args: tuple[Any, ...]) -> Check:
    python_type, *metadata = args
    kinds = tuple(type(meta) for meta in metadata)
    if kinds == (EncodedBytes, fhir_types.Base64Binary) and python_type is bytes:
        encoder = metadata[0].encoder
        return _base64 if encoder is Base64Encoder else _never
    if len(metadata) != 1:
        return _never
    meta = metadata[0]
    kind = kinds[0]
    if kind in _INTEGERS and python_type is int:
        return _integer(int(meta.min_length), int(meta.max_length))
    if kind is fhir_types.Decimal:
        return _decimal if python_type is decimal.Decimal else _never
    if kind is fhir_types.Url:
        # Annotated[AnyUrl | str, Url()]: fhir_core's inner schema for that union is a plain str
        # one (pydantic's AnyUrl is not pydantic_core's Url), so any str passes; the uri rule is
        # stricter.
        return _uri
    rule = _BY_METADATA.get(kind)
    if rule is None or rule[0] is not python_type:
        return _never
    return rule[1]
