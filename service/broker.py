"""The embedded broker: kombu's filesystem transport, made safe for concurrent processes.

kombu's own filesystem transport creates a message file and then writes into it, and its
consumer moves away any file whose name matches without waiting for the writer's lock. A
consumer that polls in between reads an empty file, and the JSON error ends the worker's
consumer loop: the worker exits and every later job waits forever. Here a message is written
under a name the consumer ignores, flushed, and renamed into place (rename is atomic within a
folder), so a consumer only ever sees complete messages. A consumer takes a message by
renaming it into its own folder beside the queue, so two embedded workers cannot both take
one message, and a file that still does not decode (a foreign or damaged file) is set aside
with an error in the log instead of stopping the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

TAKEN = ".taken"  # a consumer's folder inside the queue folder
REJECTED = ".rejected"  # files that could not be decoded, kept for inspection


_stamp_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    """Monotonic nanoseconds, strictly increasing within this process."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.monotonic_ns(), _last_stamp + 1)
        return _last_stamp


class Channel(filesystem.Channel):  # type: ignore[misc]
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        folder = Path(self.data_folder_out)
        # Names sort by a clock shared by the machine's processes: first in, first out.
        name = f"{_next_stamp():020d}_{uuid.uuid4()}.{queue}.msg"
        partial = folder / f".{name}.partial"  # no match for "<queue>.msg" after the first dot
        try:
            with open(partial, "wb") as handle:
                handle.write(dumps(message).encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, folder / name)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ChannelError(f"cannot add message {name!r} to {folder}") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        folder = Path(self.data_folder_in)
        taken = folder / TAKEN
        taken.mkdir(exist_ok=True)
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            mine = taken / f"{os.getpid()}-{name}"
            try:
                os.rename(folder / name, mine)  # atomic: exactly one consumer gets it
            except FileNotFoundError:
                continue  # another consumer took it first
            try:
                payload = mine.read_bytes()
                message = loads(payload.decode())
            except (OSError, ValueError) as exc:
                rejected = folder / REJECTED
                rejected.mkdir(exist_ok=True)
                os.replace(mine, rejected / name)
                log.error("broker: set aside undecodable message %s (%s)", name, exc)
                continue
            mine.unlink()
            return message
        raise Empty()


class Transport(filesystem.Transport):  # type: ignore[misc]
    Channel = Channel
