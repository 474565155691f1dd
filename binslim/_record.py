"""``Record``: ``typing.NamedTuple`` for the type checker, a plain ``collections.namedtuple`` at run time.

``class X(typing.NamedTuple)`` checks every field's annotation, and under ``from __future__ import
annotations`` each one is a string that typing compiles into a ForwardRef: about 0.1 ms a field, some 15 ms
for the records a plain strip defines, more than the strip itself takes. The records need none of that:
this builds the same class (fields, defaults, methods, properties, docstring) without looking at the types.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:

    class _RecordMeta(type):
        def __new__(
            cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
        ) -> type:
            if namespace.get("_record_root"):
                return super().__new__(cls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaults = [namespace[field] for field in fields if field in namespace]
            if any(field not in namespace for field in fields[len(fields) - len(defaults) :]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            record = collections.namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
            record.__qualname__ = namespace.get("__qualname__", name)
            for key, value in namespace.items():
                if key in fields or key in ("__module__", "__qualname__", "__classcell__"):
                    continue
                setattr(record, key, value)
            return record

    class Record(metaclass=_RecordMeta):
        _record_root = True


__all__ = ["Record"]
