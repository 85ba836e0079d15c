"""The binary cache: store items pushed to a folder or an HTTP server as signed
descriptions plus compressed archives, and substituted from there instead of built.

At the cache root::

    items/<key>.json           the signed description of the item with this step key
    archives/<sha256>.tar.zst  the item's tree as a reproducible tar, compressed

keys.py signs and checks, description.py is the one model of a description,
archive.py packs and unpacks (capped at the described sizes), remote.py reads and
writes folders and URLs (every read bounded through embedbuild.bounded), push.py
uploads closures, substitute.py fetches into a store. The cache reads the store only
through its API (record, files, damage).
"""
