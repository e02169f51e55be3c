"""What a run wrote, so that what leaves it is exactly what was scanned.

A run of `medalign run` holds its `--out` folder (`OutLock`: a second run into the same folder
waits), takes a `Snapshot` of it, and keeps a `RunJournal` there while it runs: the snapshot, then
one line per file the share-safe writer admitted (its path and the hash of its bytes). At the end,
every file under `--out` that is new or changed since the snapshot and is not admitted with those
very bytes is removed on the real release, whatever its modification time (`debris`); the journal
becomes the run folder's `manifest.json`, and the bundle takes only files it lists. A run killed
before its end leaves its journal behind; the next run into the folder removes that run's debris
before it does anything else (`recover`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

JOURNAL_DIR = ".journal"
LOCK_FILE = ".lock"
MANIFEST = "manifest.json"
# What the runner itself keeps in --out and never sweeps: the lock and the journals.
_OWN = (LOCK_FILE, JOURNAL_DIR)


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> list[int]:
    # ctime is set by the system whenever a file is written or its times are set (`cp -p`,
    # `shutil.copy2` cannot make it older), so a copied-in file is always "changed".
    st = path.stat(follow_symlinks=False)
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _walk(folder: Path):
    """Every file and link under `folder` (links not followed), and every folder, but the runner's own."""
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in _OWN]
            files = [f for f in files if f not in _OWN]
        for d in dirs:
            yield rel_root / d, True
        for f in files:
            yield rel_root / f, False


@dataclass
class Snapshot:
    """The files (and folders) under a folder, each with what changes when it is written."""

    files: dict[str, list[int]] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, folder: Path) -> Snapshot:
        snap = cls()
        if Path(folder).is_dir():
            for rel, is_dir in _walk(Path(folder)):
                if is_dir:
                    snap.folders.add(rel.as_posix())
                else:
                    try:
                        snap.files[rel.as_posix()] = _stamp(Path(folder) / rel)
                    except FileNotFoundError:  # removed while we looked
                        pass
        return snap

    def to_dict(self) -> dict:
        return {"files": self.files, "folders": sorted(self.folders)}

    @classmethod
    def from_dict(cls, record: dict) -> Snapshot:
        return cls(dict(record.get("files", {})), set(record.get("folders", [])))


def debris(folder: Path, before: Snapshot, admitted: dict[Path, str], own_folders=()) -> tuple[list[Path], list[Path]]:
    """Files under `folder` new or changed since `before` that were not admitted with their present
    bytes, and new folders (not the run's `own_folders`) left empty of admitted files, deepest
    first: what a sweep removes."""
    folder = Path(folder)
    admitted = {Path(p).resolve(): digest for p, digest in admitted.items()}
    files, folders = [], []
    keep_dirs = {p.parent for p in admitted} | {Path(f).resolve() for f in own_folders}
    for rel, is_dir in _walk(folder):
        path = folder / rel
        if is_dir:
            if rel.as_posix() not in before.folders and path.resolve() not in keep_dirs:
                folders.append(path)
            continue
        try:
            unchanged = before.files.get(rel.as_posix()) == _stamp(path)
        except FileNotFoundError:
            continue
        if unchanged:
            continue
        digest = admitted.get(path.resolve()) if not path.is_symlink() else None
        if digest is None or file_digest(path) != digest:
            files.append(path)
    # a folder holding an admitted file or one of the run's own folders deeper down stays
    kept_parents = {parent for p in [*admitted, *keep_dirs] for parent in p.parents}
    folders = [f for f in folders if f.resolve() not in kept_parents]
    return files, sorted(folders, key=lambda p: len(p.parts), reverse=True)


def remove(paths: list[Path], folders: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


class OutLock:
    """An exclusive hold on `--out` for one run: a second run into the same folder waits for it
    (saying so once), so that no run sweeps what another is writing. Released when the process ends,
    however it ends."""

    def __init__(self, out: Path, on_wait=None):
        self.path, self.on_wait, self.handle = Path(out) / LOCK_FILE, on_wait, None

    def __enter__(self) -> OutLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.on_wait:
                self.on_wait(f"waiting for the run that holds {self.path.parent.name}/ to finish")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class RunJournal:
    """One run's journal under `--out/.journal/`: its snapshot of `--out` at the start, whether the
    scan was on, then a line per admitted file (path under `--out`, hash)."""

    def __init__(self, out: Path, run_id: str, *, scanned: bool, snapshot: Snapshot):
        self.out, self.run_id, self.scanned, self.snapshot = Path(out), run_id, scanned, snapshot
        self.path = self.out / JOURNAL_DIR / f"{run_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"run_id": run_id, "pid": os.getpid(), "scanned": scanned, "snapshot": snapshot.to_dict()}
        self.path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def admit(self, path: Path, digest: str) -> None:
        rel = self._relative(path)
        if rel is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"path": rel, "hash": digest}) + "\n")

    def _relative(self, path: Path) -> str | None:
        try:
            return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError:  # outside --out (the cache of another folder, a temporary file)
            return None

    def close(self, manifest: dict[Path, str], run_dir: Path) -> None:
        """The run ended: its manifest (files under --out it admitted, still present) goes into its
        run folder, and the journal goes."""
        entries = {}
        for path, digest in manifest.items():
            rel = self._relative(path)
            if rel is not None and Path(path).is_file():
                entries[rel] = digest
        if run_dir.is_dir():
            (run_dir / MANIFEST).write_text(json.dumps({"files": entries}, indent=1, sort_keys=True), encoding="utf-8")
        self.path.unlink(missing_ok=True)


def recover(out: Path) -> list[str]:
    """Remove what runs killed before their end left under `out` that no scan admitted (their partly
    executed notebooks, files their kernels wrote); returns what was removed, under `out`. Only a
    run that held `out` (`OutLock`) may call it."""
    out = Path(out)
    removed = []
    for journal in sorted((out / JOURNAL_DIR).glob("*.jsonl")) if (out / JOURNAL_DIR).is_dir() else []:
        lines = journal.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])
            admitted = {out / e["path"]: e["hash"] for e in map(json.loads, lines[1:]) if e.get("path")}
        except (IndexError, ValueError, KeyError):
            header, admitted = {"snapshot": {}}, {}
        files, folders = debris(out, Snapshot.from_dict(header.get("snapshot", {})), admitted)
        remove(files, folders)
        removed += [p.relative_to(out).as_posix() for p in files + folders]
        journal.unlink(missing_ok=True)
    return removed
