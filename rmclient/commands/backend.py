"""``--backend``: which backend scores (in-process or servers), its options, and the client it builds."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from rmclient.engines import SERVER_TYPES, SERVERS
from rmclient.judge_recipes import JUDGE_RECIPES
from rmclient.errors import ConfigurationError
from rmclient.transport import API_KEY_ENV

from .exits import InputError

__all__ = [
    "BACKENDS", "ENGINES", "Backend", "parse_backend", "add_model_arguments", "add_backend_arguments",
    "selected_backend", "client_arguments", "make_client",
]

#: Every ``--backend`` name: ``transformers`` (in-process) and the servers (``rmclient.engines``).
BACKENDS: Tuple[str, ...] = SERVER_TYPES
#: The server backends: they take addresses.
ENGINES: Tuple[str, ...] = SERVERS


@dataclass(frozen=True)
class Backend:
    """``transformers`` (in-process) or an engine with its server addresses."""

    engine: str
    addresses: Tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.engine if not self.addresses else f"{self.engine}@{','.join(self.addresses)}"


def parse_backend(text: str) -> Backend:
    """``transformers``, ``ENGINE`` or ``ENGINE@ADDRESS[,ADDRESS...]`` (an argparse ``type``)."""
    engine, at, rest = text.strip().partition("@")
    engine = engine.strip().lower()
    if engine not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"unknown backend {engine!r} in {text!r}: use transformers, or ENGINE@ADDRESS with ENGINE one of "
            f"{', '.join(ENGINES)} (e.g. vllm@127.0.0.1:8000)"
        )
    addresses = tuple(a.strip() for a in rest.split(",") if a.strip())
    if engine == "transformers" and at:
        raise argparse.ArgumentTypeError(f"{text!r}: the transformers backend runs in-process and takes no address")
    if at and not addresses:
        raise argparse.ArgumentTypeError(f"{text!r}: no address after '@'")
    return Backend(engine, addresses)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and the recipe options (how samples are encoded), plus in-process and retry settings."""
    g = parser.add_argument_group("model and recipe")
    g.add_argument("--model", required=True, metavar="PATH",
                   help="model folder or hub id: the tokenizer, config and recipe come from it "
                        "(with a server backend only its tokenizer and config are read; with --backend openai, "
                        "the judge's served model name)")
    g.add_argument("--recipe", choices=("polar", "chat_template"), default=None,
                   help="how samples are encoded (default: chosen from the model and the data)")
    g.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="most token ids per encoded sample (default 16384, lowered to the server's max_model_len)")
    g.add_argument("--max-response-length", type=int, default=None, metavar="N",
                   help="POLAR's token budget for the reference and the output (default 4096)")
    g.add_argument("--system-prompt", default=None, metavar="TEXT",
                   help="a system turn for chat-template models (e.g. Qwen2.5-Math-RM)")
    g.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="samples per forward pass (transformers, default 32) or the most per request "
                        "(servers, default 256; fewer when that keeps every server slot busy)")
    g.add_argument("--device", default=None, help="transformers only: cuda, cpu, ... (default: CUDA if present)")
    g.add_argument("--dtype", default=None, help="transformers only: bfloat16, float32, ...")
    g.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), metavar="KEY",
                   help=f"bearer token for the servers (default: ${API_KEY_ENV})")
    g.add_argument("--max-attempts", type=int, default=None, metavar="N",
                   help="attempts per request before a sample is reported as failed (default 5)")
    g.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="seconds for one chunk of samples, retries included (default 600)")
    j = parser.add_argument_group("LLM judge (--backend openai: any OpenAI-compatible chat server)")
    j.add_argument("--judge", default=None, metavar="RECIPE", choices=sorted(JUDGE_RECIPES),
                   help=f"the judge recipe: {', '.join(sorted(JUDGE_RECIPES))} (default pointwise); --model is "
                        "the served model name")
    j.add_argument("--judge-template", default=None, metavar="FILE",
                   help="a Jinja2 template of the judge's prompt (variables: prompt, output, reference, "
                        "principles, lo, hi; a, b for pairwise recipes; the fence filter)")
    j.add_argument("--principle", action="append", default=None, metavar="TEXT",
                   help="a principle to judge by (repeat it for several)")
    j.add_argument("--temperature", type=float, default=None, help="the judge's temperature (default 0)")
    j.add_argument("--seed", type=int, default=None, help="the judge's sampling seed (default 42)")
    j.add_argument("--judge-samples", type=int, default=None, metavar="N",
                   help="replies per verdict, averaged (the n of the request; default 1)")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` / ``--server-address`` and the model options."""
    g = parser.add_argument_group("backend")
    g.add_argument("--backend", type=parse_backend, default=Backend("transformers"), metavar="BACKEND",
                   help=f"transformers (in-process, the default) or a server: {', '.join(ENGINES)} "
                        "(rmclient: our own server, `rmclient serve`); "
                        "ENGINE@ADDRESS[,ADDRESS] gives the addresses too (e.g. vllm@127.0.0.1:8000)")
    g.add_argument("--server-address", action="append", default=None, metavar="ADDRESS",
                   help="host:port or URL of a server; repeat it or separate by commas for several")
    add_model_arguments(parser)


def selected_backend(args: argparse.Namespace) -> Backend:
    """The backend of ``--backend`` and ``--server-address``, checked."""
    backend: Backend = args.backend
    extra: List[str] = []
    for item in args.server_address or []:
        extra += [a.strip() for a in item.split(",") if a.strip()]
    if backend.engine == "transformers":
        if extra:
            raise InputError(f"--server-address needs a server --backend ({', '.join(ENGINES)})")
        return backend
    backend = Backend(backend.engine, backend.addresses + tuple(extra))
    if not backend.addresses:
        raise InputError(f"--backend {backend.engine} needs --server-address (or --backend {backend.engine}@HOST:PORT)")
    return backend


#: Reward-model options a judge has no use for: refused with ``--backend openai`` rather than ignored.
REWARD_MODEL_ONLY = ("recipe", "max_length", "max_response_length", "system_prompt", "batch_size", "device", "dtype")


def _judge_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The judge's options of ``--backend openai``; a reward-model option is refused."""
    given = [n for n in REWARD_MODEL_ONLY if getattr(args, n, None) is not None] + (
        ["trust_remote_code"] if getattr(args, "trust_remote_code", False) else [])
    if given:
        raise InputError(f"{', '.join('--' + n.replace('_', '-') for n in given)}: reward-model option(s); a judge "
                         "(--backend openai) takes --judge, --judge-template, --principle, --temperature, --seed, "
                         "--judge-samples")
    options: Dict[str, Any] = {k: v for k, v in (
        ("recipe", args.judge), ("principles", args.principle), ("temperature", args.temperature),
        ("seed", args.seed), ("n", args.judge_samples)) if v is not None}
    if args.judge_template:
        try:
            with open(args.judge_template, encoding="utf-8") as f:
                options["template"] = f.read()
        except OSError as exc:
            raise InputError(f"cannot read --judge-template {args.judge_template}: {exc}") from exc
    return options


def _model_options(args: argparse.Namespace) -> Dict[str, Any]:
    """A reward model's options; a judge-only option is refused."""
    judge_only = [f for f, v in (("--judge", args.judge), ("--judge-template", args.judge_template),
                                 ("--principle", args.principle), ("--temperature", args.temperature),
                                 ("--seed", args.seed), ("--judge-samples", args.judge_samples)) if v is not None]
    if judge_only:
        raise InputError(f"{', '.join(judge_only)}: judge option(s), for --backend openai only")
    options: Dict[str, Any] = {}
    for name in ("max_length", "max_response_length", "recipe", "system_prompt", "batch_size", "device", "dtype"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    for name in ("max_length", "max_response_length", "batch_size"):
        if name in options and options[name] < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {options[name]}")
    # in-process on CPU, one sample per forward pass: a reward never depends on the other lines of its
    # chunk, so --chunk-size and --resume give byte-identical output
    return dict(options, trust_remote_code=args.trust_remote_code, batch_invariant=None)


def client_arguments(args: argparse.Namespace, backend: Backend, *, on_error: str = "raise") -> Dict[str, Any]:
    """The keyword arguments of the ``RewardModelClient`` (an LLM judge for ``openai``) that ``args`` describe."""
    options = _judge_options(args) if backend.engine == "openai" else _model_options(args)
    if getattr(args, "max_attempts", None) is not None and args.max_attempts < 1:
        raise InputError(f"--max-attempts must be at least 1, got {args.max_attempts}")
    for name in ("api_key", "max_attempts", "deadline"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return dict(options, model=args.model, server_type=backend.engine,
                server_address=list(backend.addresses) or None, on_error=on_error)


def make_client(args: argparse.Namespace, backend: Backend, *, on_error: str = "raise") -> Any:
    """A :class:`RewardModelClient` for ``backend`` with the model options of ``args`` (a
    :class:`~rmclient.judge.JudgeClient` for ``openai``)."""
    from rmclient.client import RewardModelClient

    kwargs = client_arguments(args, backend, on_error=on_error)
    try:
        return RewardModelClient(kwargs.pop("model"), **kwargs)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer and config of --model {args.model}: {exc}") from exc
