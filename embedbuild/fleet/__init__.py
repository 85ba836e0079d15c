"""A fleet: many devices network-booted by MAC address from one server (`embedbuild serve`).

inventory.py  the inventory file: devices (MAC, name, board, system, kernel arguments)
layout.py     the TFTP tree: one folder per build, one pxelinux.cfg file per device,
              each swapped in by rename
server.py     builds what is missing, lays it out, serves it (TFTP, optional DHCP),
              re-reads the inventory when it changes
"""
