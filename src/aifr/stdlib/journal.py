"""The file journal behind ``io.fs.*``: undo entries, a blob store and idempotency records.

Every change to a confined path is planned as a list of primitive actions, each of
which is safe to apply twice and has an exact inverse:

- ``stash(path, blob)``: move the entry at ``path`` into the blob store (its inode moves,
  so content, mode and mtime are kept byte for byte), or record ``blob.absent`` when
  there is nothing, so a replay does not stash what a later action put there;
  inverse: ``place``.
- ``place(path, blob)``: move a stored blob to ``path``; inverse: ``stash``.
- ``rename(src, dst)``: move an entry between confined paths; inverse: ``rename`` back.
- ``mkdir(path)`` / ``rmdir(path)``: a directory made for a write; each undoes the other.

An action whose source is already gone (or whose stash is recorded) is skipped, so re-applying a half-applied plan
finishes it. The plan is written to ``<state>/fs/entries/<token>.json`` (the undo
token) and, with an idempotency key, to ``<state>/fs/keys/`` *before* the first action
runs: a process killed after the effect but before the runtime recorded the result
replays the recorded plan and result instead of backing up the new content again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import digest
from aifr.errors import (
    AifrError,
    ErrorCode,
    ExecutionError,
    FieldError,
    InputValidationError,
)
from aifr.stdlib.confine import Confinement, fs_error, refuse_path

__all__ = [
    "Action",
    "FsJournal",
    "Plan",
    "conflict_error",
    "fresh_name",
    "inverse_of",
    "read_json",
    "write_json",
]

Action = dict[str, str]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a change will do (``actions``) and the result it reports once done.

    ``staged`` names the blobs the plan wrote (new content from the caller): they are
    removed if the change is rolled back, so a failed change leaves nothing behind.
    """

    actions: list[Action]
    result: dict[str, JsonValue]
    staged: tuple[str, ...] = ()


def fresh_name() -> str:
    """A new, unique name for a blob or an undo token."""
    return uuid.uuid4().hex


def inverse_of(actions: Sequence[Action]) -> list[Action]:
    """The actions that undo ``actions``, in reverse order, with fresh blob names.

    Every inverse that puts something at a path first stashes whatever occupies it
    now, so undoing never destroys content that appeared since.
    """
    undo: list[Action] = []
    for action in reversed(actions):
        op = action["op"]
        if op == "stash":
            undo.append(
                {
                    "op": "stash",
                    "root": action["root"],
                    "path": action["path"],
                    "blob": fresh_name(),
                }
            )
            undo.append(
                {
                    "op": "place",
                    "root": action["root"],
                    "path": action["path"],
                    "blob": action["blob"],
                }
            )
        elif op == "place":
            undo.append(
                {
                    "op": "stash",
                    "root": action["root"],
                    "path": action["path"],
                    "blob": fresh_name(),
                }
            )
        elif op == "rename":
            undo.append(
                {
                    "op": "stash",
                    "root": action["src_root"],
                    "path": action["src"],
                    "blob": fresh_name(),
                }
            )
            undo.append({
                "op": "rename", "src_root": action["dst_root"], "src": action["dst"],
                "dst_root": action["src_root"], "dst": action["src"],
            })  # fmt: skip
        elif op == "mkdir":
            undo.append({"op": "rmdir", "root": action["root"], "path": action["path"]})
        else:
            undo.append({"op": "mkdir", "root": action["root"], "path": action["path"]})
    return undo


def write_json(directory: Path, name: str, data: dict[str, Any]) -> None:
    """Write ``directory/name`` atomically and durably (temp file, fsync, rename, fsync)."""
    tmp = directory / f".{name}.{fresh_name()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when there is no such file."""
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return data


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class FsJournal:
    """Undo entries, stored blobs and idempotency records under ``<state>/fs``."""

    def __init__(self, state_dir: Path, confinement: Confinement) -> None:
        self.base = state_dir / "fs"
        self.blobs = self.base / "blobs"
        self.entries = self.base / "entries"
        self.keys = self.base / "keys"
        self.confinement = confinement

    def _ensure(self) -> None:
        for folder in (self.blobs, self.entries, self.keys):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        fd = os.open(self.base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def stage(self, content: bytes, mode: int) -> str:
        """Write ``content`` as a new blob (durably) and return its name."""
        self._ensure()
        name = fresh_name()
        fd = os.open(self.blobs / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.write(fd, content)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    def perform(
        self,
        *,
        capability_id: str,
        scope: str | None,
        inputs: dict[str, JsonValue],
        plan: Callable[[], Plan],
        make_parents: bool = False,
    ) -> dict[str, JsonValue]:
        """Plan, journal and apply a change once per ``scope`` (an idempotency scope).

        A repeat with a finished scope returns the first result untouched; a repeat of
        a scope whose process died mid-way finishes the recorded plan and returns its
        recorded result.

        Raises:
            InputValidationError: ``scope`` was used before for different inputs.
            SandboxRefusalError: the plan or an action was refused.
            ExecutionError: an action failed (the path changed under it).
        """
        request = digest({"capability": capability_id, "inputs": inputs})
        with self._locked():
            key_name = (
                hashlib.sha256(f"{capability_id}\0{scope}".encode()).hexdigest() + ".json"
                if scope is not None
                else None
            )
            record = read_json(self.keys / key_name) if key_name else None
            if record is not None:
                if record["request"] != request:
                    raise conflict_error(scope or "")
                if record["state"] != "done":
                    self.apply(record["actions"], make_parents=make_parents)
                    record["state"] = "done"
                    write_json(self.keys, key_name or "", record)
                result: dict[str, JsonValue] = record["result"]
                return result
            planned = plan()
            token = fresh_name()
            result = {**planned.result, "undo": {"token": token}}
            entry = {"capability": capability_id, "actions": planned.actions, "result": result}
            write_json(self.entries, f"{token}.json", entry)
            if key_name:
                record = {**entry, "request": request, "state": "pending", "token": token}
                write_json(self.keys, key_name, record)
            journaled = [
                self.entries / f"{token}.json",
                *([self.keys / key_name] if key_name else []),
            ]
            self._apply_or_roll_back(planned, make_parents, journaled)
            if key_name and record is not None:
                write_json(self.keys, key_name, {**record, "state": "done"})
            return result

    def _apply_or_roll_back(self, plan: Plan, make_parents: bool, journaled: list[Path]) -> None:
        """Apply the plan's actions; if one fails, undo the ones before it and forget the change.

        A failure here means the tree changed under the plan (a symlink swapped in, a
        folder removed), so the change is abandoned whole rather than left half done:
        its journal files, its staged blobs and the ``.absent`` markers of its stashes
        go too. Stashed content is never removed (a roll-back may have kept something
        that appeared meanwhile).
        """
        actions = plan.actions
        done = 0
        try:
            for done, action in enumerate(actions):  # noqa: B007  # ``done`` is read below
                self.apply([action], make_parents=make_parents)
        except AifrError as failure:
            undo = inverse_of(actions[:done])
            try:
                self.apply(undo, make_parents=True)
            except AifrError:
                logger.exception("rolling back a failed io.fs change left it half done")
                raise failure from None
            stashes = [a["blob"] for a in (*actions[:done], *undo) if a["op"] == "stash"]
            leftovers = [*plan.staged, *(f"{blob}.absent" for blob in stashes)]
            for path in [*journaled, *(self.blobs / name for name in leftovers)]:
                path.unlink(missing_ok=True)
            raise

    def entry_actions(self, token: str) -> list[Action]:
        """The actions recorded under undo ``token``.

        Raises:
            InputValidationError: no entry has that token.
        """
        if not token.isalnum():
            raise _unknown_token(token)
        entry = read_json(self.entries / f"{token}.json")
        if entry is None:
            raise _unknown_token(token)
        actions: list[Action] = entry["actions"]
        return actions

    def apply(self, actions: Sequence[Action], *, make_parents: bool = False) -> None:
        """Apply each action in order; an action already applied is skipped.

        ``make_parents`` lets ``place`` and ``rename`` recreate missing folders (an undo
        whose folder was removed since); a forward change plans its folders itself.

        Raises:
            SandboxRefusalError: a symlink appeared on the way.
            ExecutionError: the file system refused an action.
        """
        self._ensure()
        for action in actions:
            op = action["op"]
            try:
                if op in ("stash", "place"):
                    self._move_blob(action, to_store=op == "stash", make_parents=make_parents)
                elif op == "rename":
                    self._rename(action, make_parents=make_parents)
                else:
                    self._directory(action)
            except OSError as exc:
                raise fs_error(exc, action.get("path") or action.get("dst", "")) from exc

    @contextmanager
    def _at(self, root: str, path: str, *, make_parents: bool = False) -> Iterator[tuple[int, str]]:
        root_path = Path(root)
        if root_path not in self.confinement.roots:
            raise refuse_path("path_outside_root", path, "the journal names an unknown root")
        parts = path.split("/")
        self.confinement.check_caller(root_path.joinpath(*parts), path)
        created: list[str] | None = [] if make_parents else None
        with self.confinement.directory(root_path, parts[:-1], raw=path, created=created) as fd:
            yield fd, parts[-1]

    def _move_blob(self, action: Action, *, to_store: bool, make_parents: bool) -> None:
        blob = action["blob"]
        store_fd = os.open(self.blobs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            absent = f"{blob}.absent"
            if _lstat(store_fd, absent) is not None:
                return  # the stash ran and found nothing: the prior state is "absent"
            if to_store:
                self._stash(action, store_fd, blob, absent)
                return
            with self._at(action["root"], action["path"], make_parents=make_parents) as (fd, name):
                _relocate(store_fd, blob, fd, name, to_store=False, raw=action["path"])
        finally:
            os.close(store_fd)

    def _stash(self, action: Action, store_fd: int, blob: str, absent: str) -> None:
        """Move the entry at the action's path into the store, or record it as absent.

        A stash never creates folders: a missing parent folder means there is nothing
        to keep, and making it would leave a stray folder where a symlink swap or a
        removal had taken the old one away.
        """
        try:
            with self._at(action["root"], action["path"]) as (fd, name):
                if _lstat(store_fd, blob) is not None or _lstat(fd, name) is not None:
                    _relocate(fd, name, store_fd, blob, to_store=True, raw=action["path"])
                    return
        except ExecutionError as exc:
            if exc.details.get("errno") != "ENOENT" or _lstat(store_fd, blob) is not None:
                raise
        os.close(os.open(absent, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=store_fd))

    def _rename(self, action: Action, *, make_parents: bool) -> None:
        with (
            self._at(action["src_root"], action["src"]) as (src_fd, src_name),
            self._at(action["dst_root"], action["dst"], make_parents=make_parents) as (
                dst_fd,
                dst_name,
            ),
        ):
            _relocate(src_fd, src_name, dst_fd, dst_name, to_store=False, raw=action["dst"])

    def _directory(self, action: Action) -> None:
        with self._at(action["root"], action["path"]) as (fd, name):
            info = _lstat(fd, name)
            if action["op"] == "mkdir":
                if info is None:
                    os.mkdir(name, 0o777, dir_fd=fd)
            elif info is not None and stat.S_ISDIR(info.st_mode):
                with contextlib.suppress(OSError):  # not empty: content appeared, keep it
                    os.rmdir(name, dir_fd=fd)


def _relocate(src_fd: int, src: str, dst_fd: int, dst: str, *, to_store: bool, raw: str) -> None:
    """Move ``src`` to ``dst`` without ever replacing ``dst``; a no-op once done."""
    source = _lstat(src_fd, src)
    if source is None:
        return
    target = _lstat(dst_fd, dst)
    if target is not None:
        if (target.st_dev, target.st_ino) == (source.st_dev, source.st_ino):
            os.unlink(src, dir_fd=src_fd)  # a previous run linked but did not unlink
            return
        if to_store:  # the stash was done before; ``src`` is newer content
            return
        raise ExecutionError(
            f"cannot restore {raw!r}: something else now occupies it",
            code=ErrorCode.EXECUTION_FAILED,
            path=raw,
        )
    try:
        if stat.S_ISDIR(source.st_mode):
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != 18 or stat.S_ISDIR(source.st_mode):  # 18: EXDEV, another filesystem
            raise fs_error(exc, raw) from exc
        _copy_across(src_fd, src, dst_fd, dst, source)
    os.unlink(src, dir_fd=src_fd)


def _copy_across(src_fd: int, src: str, dst_fd: int, dst: str, source: os.stat_result) -> None:
    """Copy a file to another filesystem keeping content, mode and timestamps."""
    if stat.S_ISLNK(source.st_mode):
        os.symlink(os.readlink(src, dir_fd=src_fd), dst, dir_fd=dst_fd)
        return
    tmp = f".{dst}.{fresh_name()}.tmp"
    reader = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    writer = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
    try:
        while chunk := os.read(reader, 1 << 20):
            os.write(writer, chunk)
        os.fchmod(writer, stat.S_IMODE(source.st_mode))
        os.utime(writer, ns=(source.st_atime_ns, source.st_mtime_ns))
        os.fsync(writer)
    finally:
        os.close(reader)
        os.close(writer)
    os.link(tmp, dst, src_dir_fd=dst_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    os.unlink(tmp, dir_fd=dst_fd)


def conflict_error(key: str) -> InputValidationError:
    """The error for an idempotency key reused with different inputs."""
    return InputValidationError(
        "idempotency key was already used for a different request; use a new key",
        errors=[
            FieldError(
                path="idempotency_key",
                code="conflict",
                message="key already used for a different request",
                received=key,
            )
        ],
        code=ErrorCode.IDEMPOTENCY_CONFLICT,
    )


def _unknown_token(token: str) -> InputValidationError:
    return InputValidationError(
        f"no undo entry has token {token!r}",
        errors=[
            FieldError(path="token", code="not_found", message="unknown undo token", received=token)
        ],
    )
