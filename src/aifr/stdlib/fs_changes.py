"""``io.fs`` changes: write, move, delete and restore, each journaled and undoable.

Writes and moves are MEDIUM and compensable: each returns ``{"undo": {"token": ...}}``
for ``io.fs.restore``, which puts back the exact prior state (the prior inode itself, so
content, mode and mtime match byte for byte) and is itself undoable. Deletes move the
entry into the trash under ``.aifr/fs/blobs`` and are HIGH (DELETE always is). Every
refusal names its rule and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat

from pydantic import JsonValue

from aifr.capabilities import CallInfo, Capability, Compensation, capability
from aifr.errors import ExecutionError, FieldError, InputValidationError
from aifr.stdlib.confine import ConfinedPath, Confinement, check_entry, entry_kind, refuse_path
from aifr.stdlib.journal import Action, FsJournal, Plan, fresh_name, inverse_of
from aifr.stdlib.limits import Encoding, too_large

__all__ = ["build_change_capabilities"]

_NEW_FILE_MODE = 0o644


def _scope(call: CallInfo) -> str | None:
    return f"{call.principal}\0{call.idempotency_key}" if call.idempotency_key else None


def _encode(content: str, encoding: Encoding) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error:
            raise _bad_input("content", "not valid base64", content[:40]) from None
    try:
        return content.encode(encoding)
    except UnicodeEncodeError:
        raise _bad_input("content", f"cannot be encoded as {encoding}", content[:40]) from None


def _bad_input(path: str, message: str, received: str) -> InputValidationError:
    return InputValidationError(
        f"{path}: {message}",
        errors=[FieldError(path=path, code="format", message=message, received=received)],
    )


def _action(op: str, target: ConfinedPath, **extra: str) -> Action:
    return {"op": op, "root": str(target.root), "path": target.relative, **extra}


def _mkdirs(target: ConfinedPath, missing: list[str], create_dirs: bool) -> list[Action]:
    if missing and not create_dirs:
        raise ExecutionError(
            f"folder {missing[0]!r} of {target.raw!r} does not exist (create_dirs=false)",
            path=target.raw,
            errno="ENOENT",
        )
    return [{"op": "mkdir", "root": str(target.root), "path": folder} for folder in missing]


_RESTORE = Compensation(supported=True, strategy="restore", capability_id="io.fs.restore")


def build_change_capabilities(
    *, confinement: Confinement, journal: FsJournal, max_write_bytes: int
) -> list[Capability]:
    """``io.fs.write_file``, ``move``, ``delete`` and ``restore`` over ``journal``."""
    return [
        _write_capability(confinement, journal, max_write_bytes),
        _move_capability(confinement, journal),
        _delete_capability(confinement, journal),
        _restore_capability(journal),
    ]


def _write_capability(
    confinement: Confinement, journal: FsJournal, max_write_bytes: int
) -> Capability:

    @capability(
        "io.fs.write_file",
        operation="WRITE",
        risk="MEDIUM",
        compensation=_RESTORE,
        side_effect_scope="filesystem",
        side_effect_description="creates or replaces one file inside the roots",
        idempotent=True,
        tags=("stdlib", "fs"),
        justification="the prior file is kept; io.fs.restore puts it back exactly",
    )
    def write_file(
        path: str,
        content: str,
        call: CallInfo,
        encoding: Encoding = "utf-8",
        overwrite: bool = True,
        create_dirs: bool = True,
    ) -> dict[str, JsonValue]:
        """Write a file inside the roots atomically, keeping the prior one for undo.

        Args:
            path: File path, relative to the first root or absolute inside a root.
            content: The new content (text, or base64 with ``encoding=base64``).
            encoding: Text encoding of ``content``, or ``base64`` for binary.
            overwrite: Replace an existing file (otherwise refuse with ``file_exists``).
            create_dirs: Create missing parent folders (undone by ``io.fs.restore``).
            call: Filled by the runtime; its idempotency key makes a repeat a no-op.
        """
        data = _encode(content, encoding)
        if len(data) > max_write_bytes:
            raise too_large("content_too_large", path, len(data), max_write_bytes)
        target = confinement.locate(path, change=True)

        def plan() -> Plan:
            missing, info = confinement.probe(target)
            check_entry(target, info, must_exist=False)
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise refuse_path("not_a_file", path, "the entry is a directory")
            if info is not None and not overwrite:
                raise refuse_path("file_exists", path, "the file exists and overwrite=false")
            mode = stat.S_IMODE(info.st_mode) if info is not None else _NEW_FILE_MODE
            folders = _mkdirs(target, missing, create_dirs)  # may refuse: before staging
            staged = journal.stage(data, mode)
            return Plan(
                actions=[
                    *folders,
                    _action("stash", target, blob=fresh_name()),
                    _action("place", target, blob=staged),
                ],
                result={
                    "path": target.relative,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "created": info is None,
                },
                staged=(staged,),
            )

        return journal.perform(
            capability_id="io.fs.write_file",
            scope=_scope(call),
            inputs={
                "path": path,
                "content": content,
                "encoding": encoding,
                "overwrite": overwrite,
                "create_dirs": create_dirs,
            },
            plan=plan,
        )

    return write_file


def _move_capability(confinement: Confinement, journal: FsJournal) -> Capability:
    @capability(
        "io.fs.move",
        operation="WRITE",
        risk="MEDIUM",
        compensation=_RESTORE,
        side_effect_scope="filesystem",
        side_effect_description="renames a file or folder inside the roots",
        tags=("stdlib", "fs"),
        justification="io.fs.restore moves it back and restores a replaced destination",
    )
    def move(
        source: str,
        destination: str,
        call: CallInfo,
        overwrite: bool = False,
        create_dirs: bool = True,
    ) -> dict[str, JsonValue]:
        """Move a file or folder to another path inside the roots.

        Args:
            source: The entry to move.
            destination: Its new path (not an existing folder).
            overwrite: Replace an existing destination file (kept for undo).
            create_dirs: Create missing parent folders of the destination.
            call: Filled by the runtime; its idempotency key makes a repeat a no-op.
        """
        src = confinement.locate(source, change=True)
        dst = confinement.locate(destination, change=True)

        def plan() -> Plan:
            _, src_info = confinement.probe(src)
            check_entry(src, src_info, must_exist=True)
            missing, dst_info = confinement.probe(dst)
            check_entry(dst, dst_info, must_exist=False)
            if dst_info is not None and (not overwrite or stat.S_ISDIR(dst_info.st_mode)):
                raise refuse_path(
                    "destination_exists", destination, "it exists (overwrite=false or a folder)"
                )
            if src.absolute == dst.absolute or src.absolute in dst.absolute.parents:
                raise refuse_path("invalid_path", destination, "a move into itself")
            return Plan(
                actions=[
                    *_mkdirs(dst, missing, create_dirs),
                    _action("stash", dst, blob=fresh_name()),
                    {
                        "op": "rename",
                        "src_root": str(src.root),
                        "src": src.relative,
                        "dst_root": str(dst.root),
                        "dst": dst.relative,
                    },
                ],
                result={
                    "source": src.relative,
                    "destination": dst.relative,
                    "replaced": dst_info is not None,
                },
            )

        return journal.perform(
            capability_id="io.fs.move",
            scope=_scope(call),
            inputs={
                "source": source,
                "destination": destination,
                "overwrite": overwrite,
                "create_dirs": create_dirs,
            },
            plan=plan,
        )

    return move


def _delete_capability(confinement: Confinement, journal: FsJournal) -> Capability:
    @capability(
        "io.fs.delete",
        operation="DELETE",
        risk="HIGH",
        reversible=False,
        compensation=Compensation(
            supported=True, strategy="restore_from_trash", capability_id="io.fs.restore"
        ),
        side_effect_scope="filesystem",
        side_effect_description="moves a file or folder into the trash under .aifr/",
        tags=("stdlib", "fs"),
        justification="DELETE is HIGH; the entry is kept in the trash for io.fs.restore",
    )
    def delete(path: str, call: CallInfo, recursive: bool = False) -> dict[str, JsonValue]:
        """Delete a file or folder by moving it into the trash under ``.aifr/``.

        Args:
            path: The entry to delete.
            recursive: Allow deleting a folder that is not empty.
            call: Filled by the runtime; its idempotency key makes a repeat a no-op.
        """
        target = confinement.locate(path, change=True)

        def plan() -> Plan:
            _, info = confinement.probe(target)
            check_entry(target, info, must_exist=True)
            assert info is not None  # noqa: S101  # must_exist above
            if stat.S_ISDIR(info.st_mode) and not recursive:
                with confinement.directory(target.root, target.parts, raw=path) as fd:
                    if os.listdir(fd):
                        raise refuse_path(
                            "directory_not_empty", path, "the folder is not empty (recursive=false)"
                        )
            return Plan(
                actions=[_action("stash", target, blob=fresh_name())],
                result={"path": target.relative, "type": entry_kind(info)},
            )

        return journal.perform(
            capability_id="io.fs.delete",
            scope=_scope(call),
            inputs={"path": path, "recursive": recursive},
            plan=plan,
        )

    return delete


def _restore_capability(journal: FsJournal) -> Capability:
    @capability(
        "io.fs.restore",
        operation="WRITE",
        risk="MEDIUM",
        compensation=_RESTORE,
        side_effect_scope="filesystem",
        side_effect_description="puts back the entries an io.fs change replaced",
        idempotent=True,
        tags=("stdlib", "fs", "compensation"),
        justification="what it replaces is kept, so a restore can itself be restored",
    )
    def restore(token: str) -> dict[str, JsonValue]:
        """Undo the io.fs change recorded under ``token`` (once; repeats return the first result).

        Args:
            token: The ``undo.token`` a write, move, delete or restore returned.
        """
        inverse = inverse_of(journal.entry_actions(token))
        paths = sorted({a.get("path") or a.get("dst", "") for a in inverse})
        return journal.perform(
            capability_id="io.fs.restore",
            scope=f"token\0{token}",
            inputs={"token": token},
            plan=lambda: Plan(actions=inverse, result={"restored": token, "paths": list(paths)}),
            make_parents=True,
        )

    return restore
