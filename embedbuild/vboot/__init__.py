"""Verified boot: signing keys kept outside the store, FIT signatures checked on the host
exactly as U-Boot checks them, and the public keys U-Boot's control DTB carries.

Modules: ``keys`` (the key folder: new, show, rotate), ``uboot_key`` (a public key as
U-Boot's /signature/key-NAME node), ``regions`` (the bytes a configuration signature
covers), ``verify`` (the verdict on a FIT), ``sign`` (signing a FIT without the private
key entering the store), ``keycmd`` (the ``embedbuild keys`` command's work).
"""
