"""Update repositories of the three origins: Repository.introduce (a remote yum repository),
introduce_bundle (updates uploaded as a bundle to the pool) and introduce_remote_pool (another
pool's coordinator serving its enabled repository); Repository.forget. The pool lists the ones
it uses with pool.add_repository / remove_repository, in pool.py."""
from __future__ import annotations

import ipaddress
import urllib.parse

from ..errors import ApiError
from .registry import action

ENABLED_REPOSITORY_PATH = "/repository/enabled"  # where a coordinator serves its repository


def _assert_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError("INVALID_BASE_URL", url)


def _assert_remote_pool_url(url: str) -> None:
    """https://<coordinator's IP address>/repository/enabled"""
    parts = urllib.parse.urlsplit(url)
    try:
        ipaddress.ip_address(parts.hostname or "")
        ok = parts.scheme == "https" and parts.path == ENABLED_REPOSITORY_PATH
    except ValueError:
        ok = False
    if not ok:
        raise ApiError("INVALID_BASE_URL", url)


def _assert_new(store, name_label: str, binary_url: str | None) -> None:
    """Names are unique, and so are URLs (a bundle has none); one bundle repository a pool."""
    for ref, row in store.tables["Repository"].items():
        if row["name_label"] == name_label or (binary_url and row["binary_url"] == binary_url):
            raise ApiError("REPOSITORY_ALREADY_EXISTS", ref)
        if binary_url is None and row["origin"] == "bundle":
            raise ApiError("BUNDLE_REPOSITORY_ALREADY_EXISTS", ref)


def _create(store, name_label, name_description, origin, binary_url="", source_url="",
            update=True, gpgkey_path="", certificate=""):
    return store.create("Repository", {
        "name_label": name_label, "name_description": name_description,
        "binary_url": binary_url, "source_url": source_url, "update": update,
        "gpgkey_path": gpgkey_path, "origin": origin, "certificate": certificate, "hash": "",
        "up_to_date": False})


@action("Repository.introduce")
def introduce(ctx, name_label, name_description, binary_url, source_url, update, gpgkey_path):
    _assert_url(binary_url)
    if source_url:
        _assert_url(source_url)
    if "/" in gpgkey_path or gpgkey_path.startswith("."):  # a file name in the key directory
        raise ApiError("INVALID_GPGKEY_PATH", gpgkey_path)
    _assert_new(ctx.store, name_label, binary_url)
    return _create(ctx.store, name_label, name_description, "remote", binary_url, source_url,
                   update, gpgkey_path)


@action("Repository.introduce_bundle")
def introduce_bundle(ctx, name_label, name_description):
    _assert_new(ctx.store, name_label, None)
    return _create(ctx.store, name_label, name_description, "bundle")


@action("Repository.introduce_remote_pool")
def introduce_remote_pool(ctx, name_label, name_description, binary_url, certificate):
    _assert_remote_pool_url(binary_url)
    _assert_new(ctx.store, name_label, binary_url)
    return _create(ctx.store, name_label, name_description, "remote_pool", binary_url,
                   certificate=certificate)


@action("Repository.forget")
def forget(ctx, self):
    store = ctx.store
    if any(self in row["repositories"] for row in store.tables["pool"].values()):
        raise ApiError("REPOSITORY_IS_IN_USE")
    store.destroy("Repository", self)
