"""What every engine launcher shares: versions, version tables, launch options, model facts.

An engine module (``sglang``, ``vllm``, ``lmdeploy``) holds ONE table of
version ranges -> flags (``VersionRow`` subclasses, each row citing its
range), its own flag logic and an ``EngineSpec`` that builds the command from
them. Versions, rows and row selection are ``rmclient.adapters.base``'s, shared
with the adapters. Nothing here starts a process: see ``supervisor`` for that.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

from rmclient.adapters.base import model_kind
from rmclient.adapters.versions import Version, VersionRow, format_version, parse_version, select_row
from rmclient.errors import ConfigurationError, LaunchError

logger = logging.getLogger("rmclient.launchers")

__all__ = [
    "Version",
    "parse_version",
    "format_version",
    "VersionRow",
    "select_row",
    "LaunchOptions",
    "EngineSpec",
    "EngineArgs",
    "ModelKind",
    "read_architecture",
    "model_kind",
    "installed_version",
    "resolve_version",
    "DEFAULT_HOST",
]

DEFAULT_HOST = "127.0.0.1"


@dataclass
class LaunchOptions:
    """Engine-independent launch settings; each engine maps them to its own flags.

    ``trust_remote_code``: pass the engine's remote-code flag (needed for
    checkpoints that ship their own configuration/modeling code, e.g. POLAR
    and InternLM2 reward models). ``architecture`` overrides the one read from
    the local ``config.json``. ``extra_args`` are appended verbatim.
    """

    host: str = DEFAULT_HOST
    port: int = 8000
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    api_key: Optional[str] = None
    trust_remote_code: bool = False
    served_model_name: Optional[str] = None
    max_model_len: Optional[int] = None
    dtype: Optional[str] = None
    mem_fraction_static: Optional[float] = None  # sglang only
    architecture: Optional[str] = None
    #: A process reward model's step format (``rmclient.steps.FORMATS``): ``"math_shepherd"`` serves a
    #: ``*ForCausalLM`` as a Math-Shepherd PRM; Qwen2ForProcessRewardModel needs none (its architecture says).
    steps: Optional[str] = None
    extra_args: List[str] = field(default_factory=list)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "LaunchOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigurationError(f"unknown launch option(s): {', '.join(unknown)}; known: {sorted(names)}")
        opts = cls(**kwargs)
        opts.extra_args = list(opts.extra_args or [])
        return opts

    def validate(self) -> None:
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ConfigurationError("tensor_parallel_size and data_parallel_size must be >= 1")
        if not (0 <= self.port < 65536):
            raise ConfigurationError(f"port {self.port} is out of range")


# --- the model ---------------------------------------------------------------------------


class ModelKind:
    """How a checkpoint produces its reward, as far as the launch flags care (``model_kind``'s values)."""

    SEQ_CLS = "seq_cls"  # *ForSequenceClassification: one score per sequence
    REWARD = "reward"  # *ForRewardModel (InternLM2, Qwen2): a score per token, read the last one
    CAUSAL = "causal"  # *ForCausalLM to be served as a classifier (needs a conversion)
    UNKNOWN = "unknown"  # no local config.json (hub id) and no --architecture


def added_token_id(model_path: Union[str, Path], token: str) -> Optional[int]:
    """The id of the added token ``token`` in ``model_path``'s tokenizer files (``tokenizer.json``'s
    ``added_tokens``, else ``tokenizer_config.json``'s ``added_tokens_decoder``); ``None`` when the
    folder is not local or lacks it. No tokenizer is loaded."""
    root = Path(model_path)
    try:
        data = json.loads((root / "tokenizer.json").read_text())
        for item in data.get("added_tokens") or []:
            if item.get("content") == token:
                return int(item["id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        decoder = json.loads((root / "tokenizer_config.json").read_text()).get("added_tokens_decoder") or {}
        return next((int(k) for k, v in decoder.items() if isinstance(v, dict) and v.get("content") == token), None)
    except (OSError, ValueError, TypeError):
        return None


def read_architecture(model_path: Union[str, Path]) -> Optional[str]:
    """``architectures[0]`` from ``model_path/config.json`` when that is a local folder, else ``None``.

    No hub access: a hub id gives ``None``.
    """
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {cfg}: {exc}") from exc
    archs = data.get("architectures") or []
    return archs[0] if archs else None


def has_remote_code(model_path: Union[str, Path]) -> bool:
    """Whether the local ``config.json`` declares an ``auto_map`` (code shipped with the checkpoint)."""
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return bool(json.loads(cfg.read_text()).get("auto_map"))
    except (OSError, ValueError):
        return False


# --- the engine ---------------------------------------------------------------------------


Row = TypeVar("Row", bound=VersionRow)

#: An engine's own flags: ``(model_path, options, version, row, architecture, model kind)`` ->
#: the arguments after the interpreter (``-m module ...``), without ``options.extra_args``.
EngineArgs = Callable[[str, LaunchOptions, Version, Row, Optional[str], str], List[str]]


@dataclass(frozen=True)
class EngineSpec(Generic[Row]):
    """An engine: its facts, its version table and its flags; builds the command and runs the CLI.

    An engine module defines its table and ``engine_args`` and takes
    ``build_command`` and ``flags_for`` from its ``SPEC``; its command line
    (``python -m rmclient.launchers.<engine>``) is ``cli.main(engine=...)``.
    """

    name: str
    label: str  # the name in messages ("vLLM")
    table: Sequence[Row]  # version range -> the engine's flags, oldest first
    engine_args: EngineArgs[Row]
    newest_known: str  # assumed by a dry run when the engine is not installed
    distributions: Tuple[str, ...]  # distribution names to read the version from, in order
    ready_routes: Tuple[str, ...]  # GET routes that must all answer 200 before the server is ready
    default_port: int
    #: The variable the server reads its API key from. When set, the key goes there instead of
    #: into argv, where every user of the machine could read it (``ps``).
    api_key_env: Optional[str] = None

    def key_env(self, options: LaunchOptions) -> Dict[str, str]:
        """The environment entry carrying ``options.api_key`` (empty when it travels in argv)."""
        return {self.api_key_env: options.api_key} if self.api_key_env and options.api_key else {}

    def flags_for(self, version: Union[Version, str]) -> Row:
        """The table row covering ``version``.

        Newer than every row, or than ``newest_known``: the newest row, with a warning.
        Older: ``ConfigurationError``.
        """
        row = select_row(self.table, version, None, self.label, logger, newer_uses_last=True)
        if row is self.table[-1] and row.max_version is None and parse_version(version) > parse_version(self.newest_known):
            logger.warning(
                "%s %s is newer than any version rmclient knows (%s); using the row for %s",
                self.label, version, self.newest_known, row.label,
            )
        return row

    def build_command(
        self,
        model_path: str,
        options: Optional[LaunchOptions] = None,
        *,
        engine_version: Optional[str] = None,
        python: Optional[str] = None,
        dry_run: bool = False,
    ) -> List[str]:
        """The argv that serves ``model_path`` as a reward model on the installed (or given) engine version."""
        opts = options or LaunchOptions(port=self.default_port)
        opts.validate()
        version = resolve_version(self, engine_version=engine_version, python=python, dry_run=dry_run)
        row = self.flags_for(version)
        arch, kind = check_architecture(opts, model_path)
        args = self.engine_args(model_path, opts, version, row, arch, kind)
        return python_prefix(python) + args + list(opts.extra_args)


_VERSION_PROBE = r"""
import sys
import importlib.metadata as m
for name in sys.argv[1:]:
    try:
        print(m.version(name))
        break
    except m.PackageNotFoundError:
        pass
"""


def installed_version(distributions: Sequence[str], python: Optional[str] = None) -> Optional[str]:
    """The installed version of the first of ``distributions`` found, or ``None``.

    With ``python`` (another interpreter, e.g. a separate venv) the question is
    asked to that interpreter; otherwise to this one.
    """
    if python is None or _same_interpreter(python):
        import importlib.metadata as md

        for name in distributions:
            try:
                return md.version(name)
            except md.PackageNotFoundError:
                continue
        return None
    try:
        out = subprocess.run(
            [python, "-c", _VERSION_PROBE, *distributions],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"cannot run {python} to read the engine version: {exc}") from exc
    if out.returncode != 0:
        raise LaunchError(f"{python} failed reading the engine version: {out.stderr.strip()[-500:]}")
    text = out.stdout.strip()
    return text or None


def _same_interpreter(python: str) -> bool:
    # Compare the paths as given: a venv's python is a symlink to the base
    # interpreter but sees other site-packages, so resolving would be wrong.
    return python == sys.executable


def resolve_version(
    spec: EngineSpec, *, engine_version: Optional[str], python: Optional[str], dry_run: bool
) -> Version:
    """The version whose flags to emit: the one given, else the installed one.

    A dry run without the engine installed assumes ``spec.newest_known``;
    a real launch without it raises ``LaunchError``.
    """
    if engine_version:
        return parse_version(engine_version)
    found = installed_version(spec.distributions, python)
    if found:
        logger.debug("%s %s found in %s", spec.name, found, python or sys.executable)
        return parse_version(found)
    where = python or sys.executable
    if dry_run:
        logger.info(
            "%s is not installed in %s; assuming the newest known version %s",
            spec.name,
            where,
            spec.newest_known,
        )
        return parse_version(spec.newest_known)
    raise LaunchError(
        f"{spec.name} is not installed for {where} (looked for distribution(s) "
        f"{', '.join(spec.distributions)}); install it or pass python=/--python of its environment"
    )


def python_prefix(python: Optional[str]) -> List[str]:
    return [python or sys.executable]


def add_common(cmd: List[str], flag: str, value: object) -> None:
    """Append ``flag value`` when ``value`` is not ``None``."""
    if value is not None:
        cmd += [flag, str(value)]


def check_architecture(opts: LaunchOptions, model_path: str) -> Tuple[Optional[str], str]:
    arch = opts.architecture or read_architecture(model_path)
    if not opts.trust_remote_code and has_remote_code(model_path):
        logger.warning(
            "%s ships its own code (config.json has auto_map) but trust_remote_code is off; "
            "the engine may refuse to load it",
            model_path,
        )
    return arch, model_kind(arch)


EngineRegistry = Dict[str, EngineSpec]
