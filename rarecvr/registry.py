"""The model registry: versioned inference graphs in a directory, published atomically.

Layout (each version directory is a SavedModel that TF Serving can load as model ``hard``)::

    <registry>/
      3/  saved_model.pb  variables/   signature serving_default: the hard-only graph;
                                        soft: the soft tower, for soft candidates
          manifest.json                 sha256 of every file, metrics, window, epoch, parent
      4/  ...
      PINNED                            optional: the version replicas must serve

A version is built in ``.tmp-<id>/``, every file fsynced, the manifest written, then the
directory is renamed to ``<version>/``: a reader never sees a half-written version. Only then
does the caller announce it on ``rarecvr.model-updates``. The last ``keep`` versions (and the
pinned one) are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from rarecvr.contracts import ModelUpdate
from rarecvr.files import atomic_write, fsync_dir, fsync_tree

MANIFEST = "manifest.json"
PINNED = "PINNED"


class RegistryError(Exception):
    """A version is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


class Registry:
    def __init__(self, root: Path, keep: int = 5):
        self.root = Path(root)
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)

    # -- reading ------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """Published versions, oldest first."""
        return sorted(
            int(p.name) for p in self.root.iterdir() if p.name.isdigit() and (p / MANIFEST).exists()
        )

    def path(self, version: int) -> Path:
        return self.root / str(version)

    def manifest(self, version: int) -> dict:
        path = self.path(version) / MANIFEST
        if not path.exists():
            raise RegistryError(f"version {version} has no {MANIFEST} in {self.root}")
        return json.loads(path.read_text())

    def manifest_sha256(self, version: int) -> str:
        return sha256_file(self.path(version) / MANIFEST)

    def verify(self, version: int) -> dict:
        """The manifest, once every file matches its checksum; RegistryError names the first
        file that is missing, extra or different."""
        manifest = self.manifest(version)
        expected = manifest["files"]
        actual = file_hashes(self.path(version))
        for name, digest in expected.items():
            if name not in actual:
                raise RegistryError(f"version {version}: {name} is missing")
            if actual[name] != digest:
                raise RegistryError(f"version {version}: {name} does not match its sha256")
        extra = sorted(set(actual) - set(expected))
        if extra:
            raise RegistryError(f"version {version}: unexpected file {extra[0]}")
        return manifest

    def pinned(self) -> int | None:
        path = self.root / PINNED
        if not path.exists():
            return None
        text = path.read_text(errors="replace").strip()
        if not text.isdigit():
            raise RegistryError(f"{path} holds {text[:40]!r}, not a version number")
        return int(text)

    def serving(self) -> int | None:
        """The version replicas should serve: the pinned one, else the latest."""
        versions = self.versions()
        pinned = self.pinned()
        if pinned is not None and pinned in versions:
            return pinned
        return versions[-1] if versions else None

    # -- writing ------------------------------------------------------------------------------
    def publish(self, build: Callable[[Path], None], meta: dict) -> int:
        """Build a version with ``build(directory)``, then make it visible atomically."""
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            build(tmp)
            versions = self.versions()
            version = (versions[-1] if versions else 0) + 1
            manifest = {
                "version": version,
                "created_ms": int(time.time() * 1000),
                "parent": versions[-1] if versions else None,
                **meta,
                "files": file_hashes(tmp),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            fsync_tree(tmp)
            os.rename(tmp, self.path(version))
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.prune()
        return version

    def prune(self) -> None:
        versions = self.versions()
        keep = set(versions[-self.keep :]) | {self.pinned()}
        for version in versions:
            if version not in keep:
                shutil.rmtree(self.path(version), ignore_errors=True)
        for stale in self.root.glob(".tmp-*"):
            if time.time() - stale.stat().st_mtime > 3600:  # an abandoned build
                shutil.rmtree(stale, ignore_errors=True)

    def pin(self, version: int) -> None:
        self.verify(version)
        atomic_write(self.root / PINNED, f"{version}\n".encode())

    def unpin(self) -> None:
        (self.root / PINNED).unlink(missing_ok=True)
        fsync_dir(self.root)

    def rollback(self) -> int:
        """Pin the version published before the one serving now."""
        serving = self.serving()
        older = [v for v in self.versions() if serving is not None and v < serving]
        if not older:
            raise RegistryError(f"no version older than {serving} to roll back to")
        self.pin(older[-1])
        return older[-1]

    def update_event(self, action: str, version: int) -> ModelUpdate:
        """The model-update event that announces ``action`` on ``version``."""
        return ModelUpdate(
            action=action,
            version=version,
            path=str(self.path(version)),
            manifest_sha256=self.manifest_sha256(version),
            created_ms=int(time.time() * 1000),
        )
