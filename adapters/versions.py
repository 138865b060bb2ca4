"""Engine versions and version tables, shared by the adapters and the launchers.

Each engine module holds ONE table: rows of ``[min_version, max_version)`` with the
engine's behaviour in that range, each citing the engine file that shows it. Post
releases count (sglang's ``Qwen2ForRewardModel`` is in 0.4.3.post3, not 0.4.3);
local builds (``+cpu``), pre-releases and dev builds are read as their release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar, Union

from packaging.version import InvalidVersion, Version

from rmclient.errors import ConfigurationError

__all__ = ["Version", "VersionRow", "engine_version", "format_version", "parse_version", "select_row"]


def engine_version(text: Union[str, Version, None]) -> Optional[Version]:
    """``text`` as a comparable version, or ``None`` if it is not one.

    ``"0.32.0+cpu"`` -> 0.32.0, ``"0.4.3.post3"`` -> 0.4.3.post3, ``"0.11.1rc2"`` and
    ``"0.11.1.dev12+gabc"`` -> 0.11.1 (a build of a release behaves like that release).
    """
    if isinstance(text, Version):
        parsed = text
    elif isinstance(text, str):
        try:
            parsed = Version(text.strip())
        except InvalidVersion:
            return None
    else:
        return None
    release = ".".join(str(x) for x in parsed.release)
    return Version(release + (f".post{parsed.post}" if parsed.post is not None else ""))


def parse_version(text: Union[str, Version]) -> Version:
    """:func:`engine_version`, or :class:`ConfigurationError` when ``text`` is not a version."""
    version = engine_version(text)
    if version is None:
        raise ConfigurationError(f"cannot read an engine version from {text!r}")
    return version


def format_version(version: Union[Version, str]) -> str:
    """The version as text: ``0.10.1.1``, ``0.4.3.post3``."""
    return str(version)


@dataclass(frozen=True)
class VersionRow:
    """One row of a version table: the behaviour of ``min_version <= v < max_version``.

    ``max_version`` ``None`` means "and every later version". Engine modules subclass
    this with their behaviour fields and a ``note`` that cites the range.
    """

    min_version: str
    max_version: Optional[str]

    @property
    def since(self) -> Version:
        """``min_version`` parsed."""
        return parse_version(self.min_version)

    @property
    def until(self) -> Optional[Version]:
        """``max_version`` parsed (``None``: open)."""
        return None if self.max_version is None else parse_version(self.max_version)

    def covers(self, version: Version) -> bool:
        """Whether ``version`` falls in this row's range."""
        until = self.until
        return self.since <= version and (until is None or version < until)

    @property
    def label(self) -> str:
        hi = "and later" if self.max_version is None else f"< {self.max_version}"
        return f"{self.min_version} {hi}"


R = TypeVar("R", bound=VersionRow)


def select_row(
    table: Sequence[R],
    version: Union[str, Version, None],
    unknown: Optional[R],
    engine: str,
    log: logging.Logger,
    *,
    newer_uses_last: bool = False,
) -> R:
    """The row of ``table`` covering ``version``.

    An unknown or unparsable version gives ``unknown`` (logged), or a
    :class:`ConfigurationError` when ``unknown`` is ``None``. A version older than
    the first row is a :class:`ConfigurationError`; one newer than the last row
    (which must then be closed) is too, unless ``newer_uses_last``: then the last
    row, with a warning.
    """
    parsed = engine_version(version)
    if parsed is None:
        if unknown is None:
            raise ConfigurationError(f"cannot read an engine version from {version!r}")
        log.info(
            "%s version %s; assuming: %s",
            engine,
            "unknown" if version is None else f"{version!r} unparsable",
            getattr(unknown, "note", unknown),
        )
        return unknown
    for row in table:
        if row.covers(parsed):
            return row
    last = table[-1]
    if newer_uses_last and parsed >= last.since:
        log.warning(
            "%s %s is newer than any version rmclient knows; using the row for %s", engine, parsed, last.label
        )
        return last
    raise ConfigurationError(
        f"{engine} {parsed} is not supported: the oldest supported version is {table[0].min_version}"
    )
