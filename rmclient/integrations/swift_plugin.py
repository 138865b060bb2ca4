"""ms-swift: an ORM plugin that scores GRPO completions with rmclient.

Use it as it is::

    export RMCLIENT_MODEL=internlm/POLAR-7B RMCLIENT_SERVER_TYPE=sglang RMCLIENT_SERVER_ADDRESS=127.0.0.1:30000
    swift rlhf --rlhf_type grpo ... \\
        --external_plugins "$(python -c 'import rmclient.integrations as m; print(m.SWIFT_PLUGIN)')" \\
        --reward_funcs rmclient

ms-swift imports the file (``--external_plugins``), which registers ``orms["rmclient"]``
(and ``orms["rmclient_async"]``, an ``AsyncORM`` that ms-swift runs concurrently with other
async reward functions). The trainer builds it as ``orms[name](args=grpo_args)`` and calls
it as ``orm(completions, **columns)``: ``completions`` are the generated strings and the
columns hold, per completion, ``messages`` (the conversation, the completion last),
``prompt_id`` and every dataset column. The prompt scored is ``messages`` without its
last turn; POLAR's reference is the dataset column named by ``RMCLIENT_REFERENCE_COLUMN``
(default ``reference``).

Settings (environment): ``RMCLIENT_MODEL``, ``RMCLIENT_SERVER_TYPE`` (default
``transformers``), ``RMCLIENT_SERVER_ADDRESS`` (comma-separated for several),
``RMCLIENT_TRUST_REMOTE_CODE``, ``RMCLIENT_RECIPE`` (``polar`` or ``chat_template``: needed
for a checkpoint not named POLAR when the data has the reference column),
``RMCLIENT_API_KEY``, ``RMCLIENT_REFERENCE_COLUMN``, ``RMCLIENT_STRIP_THINK``,
``RMCLIENT_ON_ERROR``. For anything else (several reward models, other client options)
write a plugin file of your own::

    from swift.rewards import orms          # ms-swift 3.x: from swift.plugin import orms
    from rmclient.integrations.swift_plugin import make_orm
    orms["my_rm"] = make_orm(lambda: RewardComposition([...]))
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

try:  # ms-swift >= 4
    from swift.rewards import ORM, AsyncORM, orms
except ImportError:  # ms-swift 3.x
    try:
        from swift.plugin import ORM, orms  # type: ignore[no-redef]

        try:
            from swift.plugin import AsyncORM  # type: ignore[no-redef]
        except ImportError:
            AsyncORM = None  # type: ignore[assignment,misc]
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rmclient's ms-swift plugin needs ms-swift (swift.rewards in 4.x, swift.plugin in 3.x): "
            f"pip install ms-swift ({e})"
        ) from e

from rmclient.errors import ConfigurationError
from rmclient.scorer import Target
from rmclient.integrations._common import build_samples, group_ids_by_prompt, plain, resolve_references
from rmclient.integrations.settings import client_from_settings, read_settings


def client_from_env() -> Any:
    """A ``RewardModelClient`` configured by the ``RMCLIENT_*`` environment variables (one per process)."""
    return client_from_settings({}, os.environ)


def swift_samples(
    target: Target,
    completions: Sequence[Any],
    columns: Mapping[str, Any],
    *,
    reference_column: Optional[str] = "reference",
    strip_think: bool = False,
) -> List[Dict[str, Any]]:
    """rmclient samples from what ms-swift hands an ORM."""
    n = len(completions)
    messages = columns.get("messages")
    if messages is None or len(messages) != n:
        raise ConfigurationError(
            f"ms-swift passed {0 if messages is None else len(messages)} 'messages' for {n} completions"
        )
    prompts = []
    for i in range(n):
        conversation = plain(messages[i]) or []
        last = conversation[-1] if conversation else None
        prompts.append(conversation[:-1] if isinstance(last, dict) and last.get("role") == "assistant" else conversation)
    references = resolve_references(target, columns, reference_column, n, setting="RMCLIENT_REFERENCE_COLUMN")
    return build_samples(prompts, completions, references, strip_think=strip_think)


def _group_ids(columns: Mapping[str, Any], samples: List[Dict[str, Any]]) -> List[Any]:
    ids = columns.get("prompt_id")
    if ids is not None and len(ids) == len(samples) and all(ids):
        return list(ids)
    return group_ids_by_prompt([s["prompt"] for s in samples])


def make_orm(
    scorer_factory: Callable[[], Any],
    *,
    reference_column: Optional[str] = None,
    strip_think: Optional[bool] = None,
    asynchronous: bool = False,
) -> type:
    """An ORM class for ``orms[...]`` that scores with what ``scorer_factory()`` returns.

    The scorer (a client, a composition or a function ``samples -> list of floats``) is
    built on the first call, once per process. ``reference_column`` and ``strip_think``
    default to ``RMCLIENT_REFERENCE_COLUMN`` (else ``"reference"``) and ``RMCLIENT_STRIP_THINK``.
    """
    lock = threading.Lock()
    cache: Dict[str, Target] = {}

    def target() -> Target:
        with lock:
            if "t" not in cache:
                cache["t"] = Target(scorer_factory())
            return cache["t"]

    def settings() -> Dict[str, Any]:
        cfg = read_settings({"reference_column": reference_column, "strip_think": strip_think}, os.environ)
        return {"reference_column": cfg["reference_column"], "strip_think": cfg["strip_think"]}

    if asynchronous:
        if AsyncORM is None:  # pragma: no cover - ms-swift 3.x without AsyncORM
            raise ConfigurationError("this ms-swift has no AsyncORM")

        class RMClientAsyncORM(AsyncORM):  # type: ignore[misc,valid-type]
            """Scores completions with rmclient (async: runs alongside other async reward functions)."""

            async def __call__(self, completions: List[Any], **kwargs: Any) -> List[float]:  # type: ignore[override]
                t = target()
                samples = swift_samples(t, completions, kwargs, **settings())
                return await t.ascore(samples, group_ids=_group_ids(kwargs, samples))

        return RMClientAsyncORM

    class RMClientORM(ORM):  # type: ignore[misc,valid-type]
        """Scores completions with rmclient."""

        def __call__(self, completions: List[Any], **kwargs: Any) -> List[float]:  # type: ignore[override]
            t = target()
            samples = swift_samples(t, completions, kwargs, **settings())
            return t.score(samples, group_ids=_group_ids(kwargs, samples))

    return RMClientORM


RMClientORM = make_orm(client_from_env)
orms["rmclient"] = RMClientORM
if AsyncORM is not None:
    RMClientAsyncORM = make_orm(client_from_env, asynchronous=True)
    orms["rmclient_async"] = RMClientAsyncORM
