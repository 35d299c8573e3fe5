"""Downloads: streamed into a temporary file, sha256-checked, moved into place only when they check out.

`_download(url, sha256, target, what)` streams `url` into a temporary file beside `target` and moves it
into place with `os.replace` only when its sha256 is `sha256`; on a mismatch or a network error nothing is
left behind. A host that cannot be reached gives one line (`_network_error`): `cannot reach HOST: reason;
HINT`, where the hint says what to download by hand and where to place it (`_by_hand`). `sha256_of` and
`_digest` are the checks: the sha256 of a file, or for a folder the sha256 of its `sha256sum`-style
listing (`<sha256>  <file name>` lines sorted by name). Standard library only (tqdm shows progress).
"""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from protgen_jax.errors import DataError

__all__ = ["sha256_of"]

_CHUNK = 1 << 20
_TIMEOUT = 60


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_listing(hashes: dict[str, str]) -> str:
    """sha256 of a `sha256sum`-style listing: `<sha256>  <name>` lines sorted by name."""
    listing = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return hashlib.sha256(listing.encode()).hexdigest()


def _digest(path: Path) -> str:
    """sha256 of a file, or `_digest_listing` of the files in a folder."""
    if not path.is_dir():
        return sha256_of(path)
    return _digest_listing({p.name: sha256_of(p) for p in path.iterdir()})


def _network_error(url: str, err: BaseException, what: str, hint: str) -> DataError:
    """One-line DataError for a failed download of `what` from `url`; `hint` says what to do by hand."""
    if isinstance(err, urllib.error.HTTPError):
        return DataError(f"{url}: download of {what} failed: HTTP {err.code} {err.reason}")
    if isinstance(err, urllib.error.URLError | ConnectionError | TimeoutError):
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return DataError(f"cannot reach {_host(url)}: {reason}; {hint}")
    return DataError(f"{url}: download of {what} failed: {err}")


def _by_hand(url: str, folder: Path, filename: str) -> str:
    named = "" if Path(urllib.parse.urlsplit(url).path).name == filename else f" as {filename}"
    return (
        f"download {url} by hand and place it in {folder}/{named}, or set PROTGEN_DATA_DIR to a "
        f"folder holding {folder.name}/{filename}"
    )


def _download(url: str, sha256: str, target: Path, what: str) -> Path:
    """Stream `url` into a temporary file beside `target`, check it against `sha256`, move it into
    place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    part = Path(part_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=_TIMEOUT) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=None, leave=False
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != sha256:
            raise DataError(
                f"{url}: sha256 mismatch for {what}: expected {sha256}, got {actual}; "
                "the download was discarded"
            )
        os.replace(part, target)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_error(url, err, what, _by_hand(url, target.parent, target.name)) from err
    finally:
        part.unlink(missing_ok=True)
    return target
