"""The bench: TFTP server, consoles, QEMU boards, U-Boot and Linux shell drivers."""
