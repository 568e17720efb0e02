"""The recsys app: a batched MiniDLRM ranker behind an HTTP/gRPC ingress.

Owns: the recsys Serve application (`build_app(RecsysArgs)`), the MiniDLRM model, request parsing
and validation, the dynamic batching that merges concurrent requests into one forward pass, and
the serving API of `kind: recsys` in docs/architecture.md.
Does not own: replica counts, GPUs per replica (the stack config sets them per deployment name),
ports, route prefixes or env flags. Weights are random (fixed seed) unless `weights_path` names a
state dict: the app measures serving, not recommendation quality.

Its args model and deployment names live in app/contracts.py (the contract with the stack config).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import grpc
import numpy as np
import torch
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from torch import nn

from app.contracts import (
    EMBEDDING_DIM,
    NUM_SPARSE,
    RANKER_DEPLOYMENT,
    RECSYS_DEPLOYMENTS,
    RECSYS_INGRESS_DEPLOYMENT,
    RecsysArgs,
)
from app.protos import recsys_pb2
from app.requests import (
    BadRequest,
    bad_request,
    int_param,
    json_object,
    subpath,
)

INGRESS_DEPLOYMENT = RECSYS_INGRESS_DEPLOYMENT
DEPLOYMENTS = RECSYS_DEPLOYMENTS
GRPC_SERVICER = "app.protos.recsys_pb2_grpc.add_RecsysServiceServicer_to_server"

NUM_DENSE = 13


@dataclass(frozen=True)
class Features:
    """One request's rows: dense (n, 13) float32, sparse (n, 26) int64 (non-negative ids)."""

    dense: np.ndarray
    sparse: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.dense.shape[0])


class MiniDLRM(nn.Module):
    """A small DLRM: bottom MLP on dense features, one embedding per sparse feature, pairwise dot
    interaction of the 27 vectors (upper triangle), top MLP, sigmoid."""

    # Upper-triangle indices of the 27x27 interaction matrix, buffers so they follow .to(device).
    _rows: torch.Tensor
    _cols: torch.Tensor

    def __init__(self, cardinality: int, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.cardinality = cardinality
        self.embeddings = nn.ModuleList(
            nn.Embedding(cardinality, embedding_dim) for _ in range(NUM_SPARSE)
        )
        self.bottom = nn.Sequential(
            nn.Linear(NUM_DENSE, 256), nn.ReLU(), nn.Linear(256, embedding_dim), nn.ReLU()
        )
        vectors = NUM_SPARSE + 1
        pairs = vectors * (vectors - 1) // 2  # 351 for 27 vectors
        self.top = nn.Sequential(
            nn.Linear(embedding_dim + pairs, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
        )
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense (B, 13) float, sparse (B, 26) int64 -> scores (B,) in [0, 1]."""
        x = self.bottom(dense)
        # Ids beyond the table wrap around: the hashing trick DLRM preprocessing uses.
        ids = torch.remainder(sparse, self.cardinality)
        vectors = torch.stack(
            [x] + [table(ids[:, i]) for i, table in enumerate(self.embeddings)], dim=1
        )
        dots = torch.bmm(vectors, vectors.transpose(1, 2))
        interactions = dots[:, self._rows, self._cols]
        return torch.sigmoid(self.top(torch.cat([x, interactions], dim=1))).squeeze(1)


def make_model(cardinality: int, seed: int, weights_path: str | None = None) -> MiniDLRM:
    """A MiniDLRM in eval mode; same seed, same weights (the global torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MiniDLRM(cardinality)
    if weights_path:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval()


def pick_device(requested: Literal["auto", "cpu", "cuda"]) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("recsys device is 'cuda' but torch sees no GPU; use 'auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def synthesize(rows: int, seed: int) -> Features:
    """Deterministic synthetic rows, shaped like Criteo's (log-normal counts, large raw ids)."""
    rng = np.random.default_rng(seed)
    dense = np.log1p(rng.lognormal(0.0, 1.0, size=(rows, NUM_DENSE))).astype(np.float32)
    sparse = rng.integers(0, 2**31 - 1, size=(rows, NUM_SPARSE), dtype=np.int64)
    return Features(dense=dense, sparse=sparse)


def _matrix(value: Any, field: str, width: int, dtype: type) -> np.ndarray:
    """A JSON list of rows -> (n, width) array, or BadRequest naming the field."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{field} must be a non-empty list of rows of {width} numbers")
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != width:
            raise BadRequest(f"{field}[{i}] must be a list of {width} numbers")
        for v in row:
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if dtype is np.int64:
                ok = ok and float(v).is_integer()
            if not ok:
                raise BadRequest(f"{field}[{i}] holds {v!r}: expected {dtype.__name__} values")
    return np.asarray(value, dtype=dtype)


def _check(features: Features, max_rows: int) -> Features:
    n = features.rows
    if n > max_rows:
        raise BadRequest(f"rows must be <= {max_rows}; got {n}")
    if features.sparse.shape[0] != n:
        raise BadRequest(f"sparse has {features.sparse.shape[0]} rows but dense has {n}")
    if (features.sparse < 0).any():
        raise BadRequest("sparse ids must be >= 0")
    if not np.isfinite(features.dense).all():
        raise BadRequest("dense values must be finite")
    return features


def _synthesized(rows: int, seed: int, args: RecsysArgs) -> Features:
    """Synthetic rows for a request that asks for `rows` and `seed` instead of sending features."""
    if rows < 1 or rows > args.max_rows:
        raise BadRequest(f"rows must be between 1 and {args.max_rows}; got {rows}")
    if seed < 0:  # numpy's generator takes non-negative seeds only
        raise BadRequest(f"seed must be >= 0; got {seed}")
    return synthesize(rows, seed)


def parse_json_request(params: Mapping[str, Any], args: RecsysArgs) -> Features:
    """Features from `{"rows": n, "seed": s}` or `{"dense": [[13]...], "sparse": [[26]...]}`."""
    if "dense" in params or "sparse" in params:
        dense = _matrix(params.get("dense"), "dense", NUM_DENSE, np.float32)
        sparse = _matrix(params.get("sparse"), "sparse", NUM_SPARSE, np.int64)
        return _check(Features(dense=dense, sparse=sparse), args.max_rows)
    return _synthesized(int_param(params, "rows", args.rows), int_param(params, "seed", 0), args)


def parse_grpc_request(request: recsys_pb2.RankRequest, args: RecsysArgs) -> Features:
    """Features from a RankRequest: flat row-major features, or rows + seed to synthesize."""
    if not request.dense and not request.sparse:
        return _synthesized(request.rows or args.rows, request.seed, args)
    if len(request.dense) % NUM_DENSE or not request.dense:
        raise BadRequest(f"dense must hold rows * {NUM_DENSE} values; got {len(request.dense)}")
    n = len(request.dense) // NUM_DENSE
    if len(request.sparse) != n * NUM_SPARSE:
        raise BadRequest(
            f"sparse must hold rows * {NUM_SPARSE} = {n * NUM_SPARSE} values; got "
            f"{len(request.sparse)}"
        )
    if request.rows and request.rows != n:
        raise BadRequest(f"rows is {request.rows} but the features hold {n} rows")
    dense = np.asarray(request.dense, dtype=np.float32).reshape(n, NUM_DENSE)
    sparse = np.asarray(request.sparse, dtype=np.int64).reshape(n, NUM_SPARSE)
    return _check(Features(dense=dense, sparse=sparse), args.max_rows)


def merge(batch: Sequence[Features]) -> Features:
    """Concatenates several requests' rows for one forward pass."""
    return Features(
        dense=np.concatenate([f.dense for f in batch]),
        sparse=np.concatenate([f.sparse for f in batch]),
    )


def split(scores: Sequence[float], counts: Sequence[int]) -> list[list[float]]:
    """Splits merged scores back into one list per request, in request order."""
    if sum(counts) != len(scores):
        raise ValueError(f"{len(scores)} scores for {sum(counts)} rows")
    out: list[list[float]] = []
    start = 0
    for n in counts:
        out.append(list(scores[start : start + n]))
        start += n
    return out


@serve.deployment(name=RANKER_DEPLOYMENT)
class Ranker:
    """Scores rows with MiniDLRM; concurrent requests share one forward pass (`serve.batch`)."""

    def __init__(self, args: RecsysArgs) -> None:
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        self._device = pick_device(args.device)
        self._model = make_model(args.cardinality, args.seed, args.weights_path).to(self._device)
        # serve.batch reads its limits at call time from these setters, so args can set them.
        batched = cast(Any, self.rank)  # the setters serve.batch adds are not in its stubs
        batched.set_max_batch_size(args.max_batch_size)
        batched.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch
    async def rank(self, batch: list[Features]) -> list[list[float]]:
        merged = merge(batch)
        with torch.inference_mode():
            scores = self._model(
                torch.from_numpy(merged.dense).to(self._device),
                torch.from_numpy(merged.sparse).to(self._device),
            )
        return split(scores.float().cpu().tolist(), [f.rows for f in batch])

    async def __call__(self, features: Features) -> list[float]:
        return await self.rank(features)


@serve.deployment(name=INGRESS_DEPLOYMENT)
class RecsysIngress:
    """HTTP `{prefix}/rank` and gRPC `RecsysService.Rank`: parse, validate, call the Ranker."""

    def __init__(self, ranker: DeploymentHandle, args: RecsysArgs) -> None:
        codec = args.handle_serialization
        self._ranker = ranker.options(request_serialization=codec, response_serialization=codec)
        self._args = args

    async def __call__(self, request: Request) -> Response:
        path = subpath(request)
        if path != "/rank" or request.method not in ("GET", "POST"):
            return JSONResponse(
                {"error": f"no route {request.method} {request.url.path}"}, status_code=404
            )
        try:
            params: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                params.update(await json_object(request))
            features = parse_json_request(params, self._args)
        except BadRequest as e:
            return bad_request(e)
        scores = await self._ranker.remote(features)
        return JSONResponse({"scores": scores, "rows": len(scores)})

    async def Rank(
        self, request: recsys_pb2.RankRequest, grpc_context: RayServegRPCContext
    ) -> recsys_pb2.RankReply:
        try:
            features = parse_grpc_request(request, self._args)
        except BadRequest as e:
            # Serve sends the code and details set here once the method returns.
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(e))
            return recsys_pb2.RankReply()
        return recsys_pb2.RankReply(scores=await self._ranker.remote(features))


# No `from __future__ import annotations` here: Serve reads the builder's annotation at runtime
# to validate the config's `args` into RecsysArgs.
def build_app(args: RecsysArgs) -> serve.Application:
    """The recsys application from the serve config's `args`."""
    return RecsysIngress.bind(Ranker.bind(args), args)
