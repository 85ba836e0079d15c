"""The per-user settings file (~/.config/embedbuild/config.toml)."""

from __future__ import annotations

from pydantic import Field

from embedbuild.model.base import Strict


class CacheSettings(Strict):
    """[cache]: where to fetch built items from, and whose signatures to accept."""

    substituters: list[str] = Field(
        default=[], description="folders or http(s) URLs of binary caches, tried in order")
    trusted_keys: list[str] = Field(
        default=[], description="public key files (NAME.public); relative to this file")
    timeout: float = Field(
        default=5.0, gt=0, le=120,
        description="seconds to wait for a cache to connect or send more (each time)")
    deadline: float = Field(
        default=600.0, gt=0, le=86400,
        description="seconds one item (its description and archive) may take in all")
    build_deadline: float = Field(
        default=3600.0, gt=0, le=7 * 86400,
        description="seconds all cache fetches of one build may take together")
    min_rate: int = Field(
        default=64 << 10, ge=0,
        description="bytes a second an item must keep up on average after a grace of "
        "three timeouts (0: no rate asked)")


class UserConfig(Strict):
    """The whole file; every table is optional."""

    cache: CacheSettings = CacheSettings()
