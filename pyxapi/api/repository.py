"""Update repositories: Repository.introduce and Repository.forget (the pool lists the ones
it uses with pool.add_repository / remove_repository, in pool.py)."""
from __future__ import annotations

import urllib.parse

from ..errors import ApiError
from .registry import action


def _assert_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError("INVALID_BASE_URL", url)


@action("Repository.introduce")
def introduce(ctx, name_label, name_description, binary_url, source_url, update, gpgkey_path):
    _assert_url(binary_url)
    if source_url:
        _assert_url(source_url)
    if "/" in gpgkey_path or gpgkey_path.startswith("."):  # a file name in the key directory
        raise ApiError("INVALID_GPGKEY_PATH", gpgkey_path)
    store = ctx.store
    for ref, row in store.tables["Repository"].items():
        if row["name_label"] == name_label or row["binary_url"] == binary_url:
            raise ApiError("REPOSITORY_ALREADY_EXISTS", ref)
    return store.create("Repository", {
        "name_label": name_label, "name_description": name_description,
        "binary_url": binary_url, "source_url": source_url, "update": update,
        "gpgkey_path": gpgkey_path, "origin": "remote", "hash": "", "up_to_date": False})


@action("Repository.forget")
def forget(ctx, self):
    store = ctx.store
    if any(self in row["repositories"] for row in store.tables["pool"].values()):
        raise ApiError("REPOSITORY_IS_IN_USE")
    store.destroy("Repository", self)
