"""Print the largest symbols of an ELF file as JSON, names demangled by LIEF.

    python -P binslim/_lief_symbols.py FILE TABLE COUNT      (TABLE: symtab or dynsym)

inspect.py runs this file as a script in a child process, because LIEF's C++ core can crash on unusual
input. It needs only the standard library and LIEF, so it does not import binslim.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def largest_symbols(path: str, table: str, count: int) -> dict[str, Any]:
    import lief

    lief.logging.disable()
    binary = lief.ELF.parse(path)
    if binary is None:
        raise ValueError("LIEF could not parse the file")
    symbols = binary.symtab_symbols if table == "symtab" else binary.dynamic_symbols
    sized: list[tuple[int, str, str, str]] = []  # (size, name, type, section)
    for symbol in symbols:
        if symbol.size <= 0:
            continue
        section = symbol.section
        sized.append(
            (
                int(symbol.size),
                str(symbol.demangled_name or symbol.name),
                str(symbol.type).rsplit(".", 1)[-1].lower(),
                str(section.name) if section is not None else "",
            )
        )
    sized.sort(key=lambda entry: (-entry[0], entry[1]))
    largest = [
        {"name": name, "size": size, "type": kind, "section": section}
        for size, name, kind, section in sized[:count]
    ]
    return {"count": len(sized), "symbols": largest}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("symtab", "dynsym") or not argv[2].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(largest_symbols(argv[0], argv[1], int(argv[2])), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
