"""Ray Data: score a dataset on a cluster, one client per actor.

::

    import ray
    from rmclient.integrations.ray import BATCHES_AT_ONCE, RewardScorer

    ds = ray.data.read_json("samples.jsonl")
    scored = ds.map_batches(
        RewardScorer,
        fn_constructor_kwargs={"model": "internlm/POLAR-7B", "trust_remote_code": True},  # in-process
        # or {"model": "/models/rm", "server_type": "vllm", "server_address": ["10.0.0.1:8000", ...]}
        concurrency=4, num_gpus=1, batch_size=256, max_concurrency=BATCHES_AT_ONCE,
    )

Each actor builds its client once (in-process on its GPU, or pointing at servers) and adds the
rewards as a column (``reward_column``). ``__call__`` is an async generator (Ray Data >= 2.31): Ray
runs the batches of a block at once, in order (``max_concurrency=N`` lets an actor take N blocks at
once), and their requests share the client's batches: in-process, the model's passes are planned
over them together (equal lengths share a pass, so blocks scored at once take fewer passes).
Failures keep the client's policy: ``on_error="raise"`` (default) fails the batch with the
client's :class:`~rmclient.errors.ScoringError` (which Ray may retry); ``on_error="nan"`` writes
NaN for the failed rows and the reason in ``error_column`` (``None`` for the rows that were
scored), never a made-up value. Rows are the columns of the batch (``prompt``, ``reference``,
``output`` or ``messages``; other columns are ignored and kept).
Ray is imported by Ray, not here: this module only needs numpy.
"""

from __future__ import annotations

import math
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence

from rmclient.errors import ConfigurationError, ScoringError

#: Blocks an actor scores at once (``map_batches(..., max_concurrency=BATCHES_AT_ONCE)``), as
#: ``rmclient score`` keeps chunks of a file in flight.
BATCHES_AT_ONCE = 4


def _plain(value: Any) -> Any:
    """A numpy value (a batch cell: arrays of objects, scalars) as plain Python."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def batch_rows(batch: Any) -> List[Dict[str, Any]]:
    """The rows of a Ray Data batch (``numpy``: a dict of columns; ``pandas``: a DataFrame) as dicts."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # a pandas DataFrame
        return [{k: _plain(v) for k, v in row.items()} for row in batch.to_dict("records")]
    columns = {k: list(v) for k, v in batch.items()}
    n = len(next(iter(columns.values()))) if columns else 0
    return [{k: _plain(v[i]) for k, v in columns.items()} for i in range(n)]


class RewardScorer:
    """A callable class for ``ds.map_batches(RewardScorer, fn_constructor_kwargs=...)``.

    ``fn_constructor_kwargs``: ``model`` and any :class:`~rmclient.RewardModelClient` option
    (``server_type="openai"`` gives an LLM judge), plus ``reward_column`` (default ``"reward"``),
    ``error_column`` (default ``"reward_error"``, written with ``on_error="nan"``).
    """

    def __init__(self, model: str, *, reward_column: str = "reward", error_column: str = "reward_error",
                 on_error: str = "raise", **client_options: Any) -> None:
        from rmclient.client import RewardModelClient

        if on_error not in ("raise", "nan"):
            raise ConfigurationError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        self.reward_column, self.error_column, self.on_error = reward_column, error_column, on_error
        self.client = RewardModelClient(model, on_error="raise", **client_options)

    async def score(self, rows: Sequence[Dict[str, Any]]) -> "tuple[List[float], List[Optional[str]]]":
        """``(rewards, errors)`` of ``rows``: a failed row has NaN and its reason (``on_error="nan"``)."""
        try:
            return list(await self.client.ascore(list(rows))), [None] * len(rows)
        except ScoringError as exc:
            if self.on_error == "raise":
                raise
            rewards = [math.nan if r is None else float(r) for r in exc.rewards]
            return rewards, [exc.failures.get(i) for i in range(len(rows))]

    async def __call__(self, batch: Any) -> AsyncIterator[Any]:
        """An async generator: Ray Data runs several batches of an actor at once (in order), and their
        requests share the client's batches."""
        import numpy as np

        rows = batch_rows(batch)
        rewards, errors = await self.score(rows) if rows else ([], [])
        out = batch.copy() if hasattr(batch, "copy") else dict(batch)
        out[self.reward_column] = np.asarray(rewards, dtype=np.float64)
        if self.on_error == "nan":
            out[self.error_column] = np.asarray(errors, dtype=object)
        yield out

    def __del__(self) -> None:  # an actor going away closes its connections
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
