"""Update repositories of the other two origins: Repository.introduce_bundle (updates uploaded
as a bundle to the pool) and Repository.introduce_remote_pool (another pool's coordinator
serving its enabled repository); Repository.introduce is in repository.py."""
from __future__ import annotations

import ipaddress
import urllib.parse

from ..errors import ApiError
from .registry import action

ENABLED_REPOSITORY_PATH = "/repository/enabled"  # where a coordinator serves its repository


def _create(store, name_label, name_description, origin, binary_url="", certificate=""):
    return store.create("Repository", {
        "name_label": name_label, "name_description": name_description,
        "binary_url": binary_url, "source_url": "", "update": True, "gpgkey_path": "",
        "origin": origin, "certificate": certificate, "hash": "", "up_to_date": False})


@action("Repository.introduce_bundle")
def introduce_bundle(ctx, name_label, name_description):
    store = ctx.store
    for ref, row in store.tables["Repository"].items():
        if row["name_label"] == name_label:
            raise ApiError("REPOSITORY_ALREADY_EXISTS", ref)
        if row["origin"] == "bundle":  # one bundle repository a pool
            raise ApiError("BUNDLE_REPOSITORY_ALREADY_EXISTS", ref)
    return _create(store, name_label, name_description, "bundle")


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


@action("Repository.introduce_remote_pool")
def introduce_remote_pool(ctx, name_label, name_description, binary_url, certificate):
    _assert_remote_pool_url(binary_url)
    store = ctx.store
    for ref, row in store.tables["Repository"].items():
        if row["name_label"] == name_label or row["binary_url"] == binary_url:
            raise ApiError("REPOSITORY_ALREADY_EXISTS", ref)
    return _create(store, name_label, name_description, "remote_pool", binary_url, certificate)
