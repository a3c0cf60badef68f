"""The audit's uploads as the caches take them: people's own files as hashable `caches.Upload`s, and the
name their audit is shown under. The audit's cached results (the batch audit, the unfamiliar-input
calibration and scores, the worst-case search) are in `caches`."""
from __future__ import annotations

import hashlib

from drnet_app.caches import Upload


def uploads_of(files) -> tuple[Upload, ...]:
    return tuple(Upload(f.name, bytes(f.getvalue())) for f in files)


def uploads_name(uploads: tuple[Upload, ...]) -> str:
    digest = hashlib.sha256(b"".join(hashlib.sha256(u.data).digest() for u in uploads)).hexdigest()[:12]
    names = ", ".join(u.name for u in uploads[:3]) + (f" and {len(uploads) - 3} more" if len(uploads) > 3 else "")
    return f"your upload ({names}; content {digest})"
