"""The shared build infrastructures, one per build system: a recipe subclasses one and
sets data (kbuild.py: busybox-style Kconfig packages; make.py: a configure script of its
own and make, with hostapd-style .config edits; autotools.py: configure --host, make,
make install into a staging folder)."""
