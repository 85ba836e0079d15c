"""What goes into the image, one module per job: a folder as cpio entries (tree.py),
the files embedbuild writes itself (generated.py), overlays with their attributes
(overlays.py), one owner per path (owners.py), and the ELF check with the libraries
dynamic binaries need (libraries.py)."""
