"""The bench, in labgrid's manner: resources (resource.py, bench.py) describe how a board
is reached; drivers act on them through small protocols (protocol.py: console.py,
uboot.py, shell.py, tftp.py, power.py, qemu.py); a boot source (bootsource.py) says what
U-Boot is told and the U-Boot strategy (strategy.py) moves the board from off to ready;
one Target (target.py) holds them all, reporting every action as a step (step.py,
report.py). The bench sees a build only as its result folder and manifest.json."""
