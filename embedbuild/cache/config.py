"""Which caches a build asks and which keys it trusts: the user's config file, where
EMBEDBUILD_SUBSTITUTERS and EMBEDBUILD_TRUSTED_KEYS (space-separated) override it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from embedbuild.cache.keys import load_public
from embedbuild.cache.remote import Remote
from embedbuild.cache.substitute import Substituters
from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_user_config
from embedbuild.step import Step


def substituters(warn: Callable[[str], None],
                 progress: Callable[[Step, str, int, int], None] | None = None
                 ) -> Substituters | None:
    """The configured substituters, or None when no cache is configured."""
    config, path = load_user_config()
    settings = config.cache
    env = os.environ.get("EMBEDBUILD_SUBSTITUTERS")
    caches = env.split() if env is not None else settings.substituters
    if not caches:
        return None
    env_keys = os.environ.get("EMBEDBUILD_TRUSTED_KEYS")
    if env_keys is not None:
        key_files, base, where = [Path(k) for k in env_keys.split()], Path(), \
            "EMBEDBUILD_TRUSTED_KEYS"
    else:
        key_files, base, where = [Path(k).expanduser() for k in settings.trusted_keys], \
            path.parent, str(path)
    if not key_files:
        raise EmbedbuildError(
            "binary caches are configured but no key is trusted: nothing could be taken "
            "from them", where=where,
            hint="name the public key files of whoever pushes (EMBEDBUILD_TRUSTED_KEYS or "
            "trusted_keys in [cache]), or build with --offline")
    trusted = {}
    for f in key_files:
        key = load_public(base / f)
        trusted[key.name] = key
    remotes = [Remote(c if "://" in c else str(Path(c).expanduser().absolute()),
                      settings.timeout) for c in caches]
    return Substituters(remotes, trusted, warn, progress, deadline=settings.deadline,
                        build_deadline=settings.build_deadline, min_rate=settings.min_rate)
