"""A check no one else makes: every device tree node the kernel tree has a driver for
must be served by a driver the built kernel has."""

from __future__ import annotations

import json

from embedbuild import compatibles, fdt
from embedbuild.errors import StepError
from embedbuild.kconfig import read_config
from embedbuild.step import Context, Step


def driver_index_step(tree: Step, arch: str) -> Step:
    """compatible -> C files of the tree (scanned once per tree and arch)."""

    def build(ctx: Context) -> None:
        index = compatibles.compatible_index(ctx.input("tree", "tree"), arch)
        ctx.output("index").write_text(json.dumps(index, indent=0, sort_keys=True))

    return Step(kind="driver-index", name=f"driver-index-{arch}", version=1,
                inputs={"arch": arch}, deps={"tree": tree}, build=build,
                outputs={"index": "compatibles.json"})


def dtb_check_step(name: str, tree: Step, index: Step, kconfig: Step, dtb: Step,
                   unserved: dict[str, str]) -> Step:
    """Fails naming each enabled node whose compatible has drivers in the tree but none
    built, with the Kconfig symbol that would build one, unless ``unserved`` (node path
    -> why, the board's kernel.unserved) leaves it so on purpose; a listed node that is
    served, disabled or absent fails too, so the list cannot go stale. Output
    ``report``: which driver serves each node."""

    def build(ctx: Context) -> None:
        compat_files = json.loads(ctx.input("index", "index").read_text())
        config = read_config(ctx.input("kconfig", "config"))
        tree_path = ctx.input("tree", "tree")

        def on(sym: str) -> bool:
            return sym == "y" or config.get(sym) in ("y", "m")

        report, missing = [], []
        left = dict(unserved)
        for dtb_file in [ctx.input("dtb", "dtb")]:
            for node in fdt.nodes(dtb_file.read_bytes()):
                if node.status not in ("okay", "ok") or not node.compatible:
                    continue
                files = sorted({f for c in node.compatible for f in compat_files.get(c, [])})
                if not files:
                    report.append({"node": node.path, "compatible": node.compatible,
                                   "driver": None})
                    continue
                reqs = {f: compatibles.requirements(tree_path, f) for f in files}
                served = [f for f, r in reqs.items() if all(any(on(s) for s in alt)
                                                             for alt in r)]
                why = left.pop(node.path, None)
                report.append({"node": node.path, "compatible": node.compatible,
                               "driver": served[0] if served else None}
                              | ({"unserved": why} if why else {}))
                if served and why:
                    missing.append(f"kernel.unserved lists {node.path}, but {served[0]} "
                                   "serves it in this kernel: remove it from the list")
                elif not served and not why:
                    wanted = sorted({s for r in reqs.values() for s in r[0] if s != "y"})
                    off = [f"CONFIG_{s}={config.get(s, 'n')}" for s in wanted]
                    missing.append(f"{dtb_file.name}: node {node.path} (compatible "
                                   f"\"{node.compatible[0]}\") has no driver in this kernel: "
                                   f"enable {' or '.join('CONFIG_' + s for s in wanted)} "
                                   f"(now {', '.join(off)})")
        missing += [f"kernel.unserved lists {path}, which is not an enabled node with a "
                    "driver in the kernel tree: remove it from the list" for path in left]
        if missing:
            raise StepError(
                f"{len(missing)} device tree node(s) without a driver:\n  " + "\n  ".join(missing),
                hint="add the symbol to a kernel fragment, disable the node "
                '(status = "disabled"), or list it in kernel.unserved with the reason',
            )
        ctx.output("report").write_text(json.dumps(report, indent=1))

    return Step(kind="dtb-check", name=name, version=1,
                inputs={"unserved": unserved} if unserved else {},
                deps={"tree": tree, "index": index, "kconfig": kconfig, "dtb": dtb},
                build=build, outputs={"report": "drivers.json"})
