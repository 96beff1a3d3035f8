"""Request bodies with a size limit: refused by their declared length before a byte is read, or
as soon as a body without one grows past the limit. A client that hangs up mid-body gets a 400 (that
nobody reads) instead of an exception's traceback in the log."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; 413 (too large) or 400 (bad Content-Length) otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "bad Content-Length")
        if int(declared) > limit:
            raise HTTPException(413, f"request body over {limit // 1024} KB")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body over {limit // 1024} KB")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the client hung up before the end of the body") from None
    return b"".join(chunks)
