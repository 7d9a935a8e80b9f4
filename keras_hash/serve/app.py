"""The search service: an ASGI app (FastAPI) over an encoder, an index and images.

Endpoints (``/openapi.json`` has the schema; ``/`` is the web page):

- ``POST /api/search/image?k=10``: body, an image file's bytes; its nearest codes;
- ``GET /api/search/id/{id}?k=10``: the neighbours of an indexed image;
- ``GET /api/search/code?code=<hex>&k=10``: those of a packed code
  (``format=base64`` too);
- ``GET /api/images/{id}``: the image file of an id; ``.../thumbnail?size=128``
  a PNG;
- ``GET /api/info``, ``GET /api/health``: bits, index kind and size, model,
  images; liveness.

Every search takes ``k`` (k nearest) or ``radius`` (every code within that
Hamming distance, inclusive, the first ``limit`` of them shown and ``count``
of all), and answers ``{"query": {"code", "bits"}, "results": [{"id",
"distance", "image", "thumbnail"}], ...}``, by distance then id as the index
ranks them. Ids are JSON **strings**: bulk encoding's 63-bit ids do not fit a
JavaScript number. Bad requests get a 4xx whose ``detail`` names the
problem: 400 (not an image, bad hex, wrong code length), 404 (unknown id),
413 (upload or pixel count over the limit), 422 (a parameter out of range).

```python
from keras_hash.serve import create_app
from keras_hash.serve.encoder import SavedModelEncoder

app = create_app(SavedModelEncoder("models/hashnet"), keras_hash.index.load("db.khi"))
# uvicorn.run(app, port=8000)
```
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from importlib import resources

import numpy as np
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from keras_hash.index.base import BinaryIndex
from keras_hash.serve.encoder import MAX_PIXELS, Batcher, ImageError, decode_upload
from keras_hash.serve.sources import ImageCatalog

#: Largest upload, in bytes (20 MiB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Most results one answer lists (k, and limit of a radius search).
MAX_RESULTS = 1000
THUMBNAIL_SIZES = (64, 128, 256)


class SearchService:
    """What the endpoints use: the encoder behind a batcher, the index, images.

    Args:
        encoder: ``.encode(uint8 [N, H, W, C]) -> uint8 [N, bits // 8]``,
            ``.image_shape``, ``.bits``, ``.describe()`` (a
            :class:`~keras_hash.serve.encoder.SavedModelEncoder` or
            :class:`~keras_hash.serve.encoder.TFServingEncoder`).
        index: any index of the library (a
            :class:`keras_hash.index.BinaryIndex`: ``search``,
            ``range_search``, ``get``, ``bits``, ``len``).
        catalog: the image file of each id, or None.
        max_batch: largest encoder batch (1: no batching).
    """

    def __init__(
        self,
        encoder,
        index,
        catalog: ImageCatalog | None = None,
        *,
        max_batch: int = 32,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
    ):
        if not isinstance(index, BinaryIndex):
            raise TypeError(
                f"index must be an index of keras_hash.index (HammingIndex, "
                f"IVFHammingIndex, MilvusHammingIndex), got {type(index).__name__}"
            )
        if encoder.bits != index.bits:
            raise ValueError(
                f"the model gives {encoder.bits}-bit codes but the index holds "
                f"{index.bits}-bit codes: serve the index built with this model"
            )
        self.encoder, self.index, self.catalog = encoder, index, catalog
        self.bits = index.bits
        self.batcher = Batcher(encoder.encode, max_batch)
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels


    def describe(self) -> dict:
        index = {
            "kind": type(self.index).__name__,
            "size": len(self.index),
            "bits": self.bits,
        }
        for name in ("nprobe", "collection", "uri"):
            if hasattr(self.index, name):
                index[name] = getattr(self.index, name)
        images = None
        if self.catalog is not None:
            images = {"source": self.catalog.source, "count": len(self.catalog)}
        return {
            "bits": self.bits,
            "index": index,
            "model": self.encoder.describe(),
            "images": images,
            "limits": {
                "max_results": MAX_RESULTS,
                "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": self.max_pixels,
                "max_batch": self.batcher.max_batch,
            },
        }

    async def search(self, code: np.ndarray, request: Request, k, radius, limit):
        """The JSON answer for one packed code ``[bits // 8]``."""
        size = len(self.index)
        query = {
            "code": code.tobytes().hex(),
            "bits": "".join(str(b) for b in np.unpackbits(code)),
        }
        if radius is None:
            if k > size:
                raise HTTPException(400, f"k={k} is more than the {size} indexed codes")
            distances, ids = await run_in_threadpool(self.index.search, code[None], k)
            distances, ids, count = distances[0], ids[0], None
            keep = distances <= self.bits  # padded rows (approximate kinds) go
            distances, ids = distances[keep], ids[keep]
            answer = {"mode": "knn", "k": k}
        else:
            found = await run_in_threadpool(self.index.range_search, code[None], radius)
            distances, ids = found[0]
            count = len(ids)
            distances, ids = distances[:limit], ids[:limit]
            answer = {
                "mode": "radius",
                "radius": radius,
                "limit": limit,
                "count": count,
            }
        base = request.scope.get("root_path", "")
        results = []
        for distance, image_id in zip(distances.tolist(), ids.tolist(), strict=True):
            shown = self.catalog is not None and image_id in self.catalog
            results.append(
                {
                    "id": str(image_id),
                    "distance": distance,
                    "image": f"{base}/api/images/{image_id}" if shown else None,
                    "thumbnail": f"{base}/api/images/{image_id}/thumbnail"
                    if shown
                    else None,
                }
            )
        return {"query": query, **answer, "results": results}

    def close(self) -> None:
        """Stops the batcher; the index stays open (its owner closes it)."""
        self.batcher.close()


def create_app(
    encoder, index, catalog: ImageCatalog | None = None, **options
) -> FastAPI:
    """The ASGI app serving ``index`` through ``encoder`` (module doc).

    Args:
        encoder, index, catalog, options: as :class:`SearchService`.
    """
    service = SearchService(encoder, index, catalog, **options)
    app = FastAPI(
        title="keras_hash image search",
        version="0.1.0",
        summary="Nearest binary codes by Hamming distance: by image, id or code.",
        docs_url=None,  # Swagger UI loads from a CDN; the page must work offline
        redoc_url=None,
    )
    app.state.service = service
    app.router.add_event_handler("shutdown", service.close)
    _add_routes(app, service)
    static = resources.files("keras_hash.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(static / "index.html"))

    return app


K = Query(10, ge=1, le=MAX_RESULTS, description="neighbours returned (k-NN)")
RADIUS = Query(None, ge=0, description="Hamming radius (inclusive); replaces k")
LIMIT = Query(
    100, ge=1, le=MAX_RESULTS, description="results listed by a radius search"
)
ID = Path(ge=-(2**63), le=2**63 - 1, description="an indexed id (int64)")


def _add_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/api/health")
    def health() -> dict:
        """Liveness: ``{"status": "ok"}`` while the service answers."""
        return {"status": "ok"}

    @app.get("/api/info")
    def info() -> dict:
        """Code length, index kind and size, the model, the images, the limits."""
        return service.describe()

    @app.post(
        "/api/search/image",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def search_image(
        request: Request, k: int = K, radius: int | None = RADIUS, limit: int = LIMIT
    ) -> dict:
        """Encodes the uploaded image (the body: JPEG, PNG, GIF or BMP bytes)
        and searches its code."""
        data = await _read_body(request, service.max_upload_bytes)
        try:
            image = await run_in_threadpool(
                decode_upload, data, service.encoder.image_shape, service.max_pixels
            )
        except ImageError as error:
            raise HTTPException(error.status, str(error)) from None
        try:
            code = await service.batcher.encode(image)
        except ConnectionError as error:  # TF Serving down: not the client's fault
            raise HTTPException(502, str(error)) from None
        return await service.search(code, request, k, radius, limit)

    @app.get("/api/search/id/{image_id}")
    async def search_id(
        request: Request,
        image_id: int = ID,
        k: int = K,
        radius: int | None = RADIUS,
        limit: int = LIMIT,
    ) -> dict:
        """Searches the stored code of an indexed id."""
        code = await run_in_threadpool(_stored_code, service, image_id)
        answer = await service.search(code, request, k, radius, limit)
        answer["query"]["id"] = str(image_id)
        return answer

    @app.get("/api/search/code")
    async def search_code(
        request: Request,
        code: str = Query(..., description="the packed code"),
        format: str = Query("hex", pattern="^(hex|base64)$"),
        k: int = K,
        radius: int | None = RADIUS,
        limit: int = LIMIT,
    ) -> dict:
        """Searches a packed code given as hex (``bits / 4`` digits) or base64,
        bit ``i`` in byte ``i // 8`` under mask ``0x80 >> (i % 8)``."""
        packed = _parse_code(code, format, service.bits)
        return await service.search(packed, request, k, radius, limit)

    @app.get("/api/images/{image_id}")
    def image(image_id: int = ID) -> FileResponse:
        """The image file of an indexed id."""
        return FileResponse(_image_path(service, image_id))

    @app.get("/api/images/{image_id}/thumbnail")
    def thumbnail(
        image_id: int = ID, size: int = Query(128, ge=16, le=512)
    ) -> Response:
        """A PNG of the image fitted in ``size`` x ``size`` (never enlarged)."""
        path = _image_path(service, image_id)
        return Response(
            _thumbnail(path, size),
            media_type="image/png",
            headers={"Cache-Control": "max-age=3600"},
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413, f"the upload is {declared} bytes, over the limit of {limit} bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the upload is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _stored_code(service: SearchService, image_id: int) -> np.ndarray:
    try:
        return service.index.get(np.asarray([image_id], np.int64))[0]
    except KeyError:
        raise HTTPException(404, f"id {image_id} is not in the index") from None


def _parse_code(text: str, form: str, bits: int) -> np.ndarray:
    text = text.strip()
    try:
        if form == "hex":
            data = bytes.fromhex(text)
        else:
            padded = text + "=" * (-len(text) % 4)
            data = base64.b64decode(
                padded.replace("-", "+").replace("_", "/"), validate=True
            )
    except (ValueError, binascii.Error):
        raise HTTPException(400, f"code {text[:80]!r} is not valid {form}") from None
    if len(data) != bits // 8:
        digits = f" ({bits // 4} hex digits)" if form == "hex" else ""
        raise HTTPException(
            400,
            f"code {text[:80]!r} holds {len(data) * 8} bits; the index "
            f"holds {bits}-bit codes: {bits // 8} bytes{digits}",
        )
    return np.frombuffer(data, np.uint8).copy()


def _image_path(service: SearchService, image_id: int) -> str:
    if service.catalog is None:
        raise HTTPException(
            404, "the service was started without images (--images or --data_dir)"
        )
    try:
        path = service.catalog.path(image_id)
    except KeyError as error:
        raise HTTPException(404, str(error.args[0])) from None
    if not os.path.isfile(path):
        raise HTTPException(404, f"the image file of id {image_id} is missing")
    return path


def _thumbnail(path: str, size: int) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()
