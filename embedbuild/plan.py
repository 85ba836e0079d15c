"""Board -> the graph of steps that builds it (planning only: nothing runs here).

The planner makes the core steps (source, patched tree, kernel config, kernel,
device tree, uImage, initramfs, U-Boot) on demand by role, and each package's
steps from its recipe (embedbuild/packages/); each output module
(embedbuild/outputs/) asks it for what it needs, adds its own steps and says what
goes into the result; the result step collects those files and writes
manifest.json. It names no output and no package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedbuild.model.board import Board
from embedbuild.outputs import applicable
from embedbuild.packages import registry, userland
from embedbuild.recipe import Target
from embedbuild.rootfs import access_point as ap_files
from embedbuild.rootfs.generated import generated_entries
from embedbuild.rootfs.libraries import elf_identity
from embedbuild.rootfs.markgood import mark_good_entries
from embedbuild.rootfs.overlays import overlay_entries
from embedbuild.scheduler import cores
from embedbuild.step import Step
from embedbuild.steps import initramfs as ir
from embedbuild.steps.dtb import dtb_step
from embedbuild.steps.dtbcheck import driver_index_step, dtb_check_step
from embedbuild.steps.kernel import kernel_step
from embedbuild.steps.kernel_config import kernel_config_step
from embedbuild.steps.kernel_needs import kernel_needs_step
from embedbuild.steps.kernel_parts import kernel_parts_step
from embedbuild.steps.patch import patched_step
from embedbuild.steps.result import result_step
from embedbuild.steps.source import unpack_step
from embedbuild.steps.uboot import uboot_steps
from embedbuild.steps.uimage import uimage_step
from embedbuild.toolchain import Toolchain


@dataclass
class Plan:
    """The steps of one board's build, by role; ``result`` is the one to realise."""

    board: Board
    steps: dict[str, Step]
    outputs: list[str]

    @property
    def result(self) -> Step:
        return self.steps["result"]


class Planner:
    """Makes a board's steps on demand, each once, by role (``--step`` names a role).

    The kernel's steps (source, tree, kconfig, kernel) are made from the board that
    defines the kernel (``board.kernel_board``): a board that takes its kernel from
    another gets the very steps, hence store items, of that board's build.
    """

    def __init__(self, board: Board) -> None:
        self.board = board
        self.kb = board.kernel_board
        self.tc = Toolchain(board.cross_compile, board.arch)
        self.steps: dict[str, Step] = {}
        self._makers: dict[str, Callable[[], Step]] = {
            "source": self._source,
            "tree": self._tree,
            "kconfig": lambda: kernel_config_step(self.kb, self.get("tree"), self.tc),
            "kernel": self._kernel,
            "dtb": lambda: dtb_step(board, self.get("tree"), self.get("kconfig"), self.tc),
            "driver-index": lambda: driver_index_step(self.get("tree"), board.arch.value),
            "dtb-check": self._dtb_check,
            "image": lambda: uimage_step(board, self.get("kernel"),
                                         self.get("dtb") if self.has_dtb else None),
            "initramfs": self._initramfs,
            "initramfs-check": lambda: ir.unpack_check_step(
                f"{board.name}-initramfs-check", self.get("kconfig"), self._system.compression),
            "uboot": self._uboot,
            "kernel-needs": self._kernel_needs,
            "kernel-parts": self._kernel_parts,
        }
        libc = board.userland.libc if board.userland else None
        self.target = Target(board, self.tc, cores(), self._package_source, self.package,
                             libc if libc in registry() else None)

    def get(self, role: str) -> Step:
        """The step of this role, made the first time it is asked for."""
        if role not in self.steps:
            self.steps[role] = self._makers[role]()
        return self.steps[role]

    def add(self, role: str, make: Callable[[], Step]) -> Step:
        """The step of an output's own role (the FIT, the SD-card image), made by
        ``make`` the first time it is asked for."""
        if role not in self.steps:
            self.steps[role] = make()
        return self.steps[role]

    def package(self, name: str) -> Step:
        """The build step of a package recipe (role NAME; its other steps NAME-SUFFIX),
        made the first time it is asked for."""
        if name not in self.steps:
            steps = registry()[name].plan(self.target)
            for suffix, step in steps.extra.items():
                self.steps[f"{name}-{suffix}"] = step
            self.steps[name] = steps.build
        return self.steps[name]

    def _package_source(self, source: str) -> Step:
        role = f"{source}-src"
        if role not in self.steps:
            self.steps[role] = unpack_step(role, self.board.sources[source])
        return self.steps[role]

    def boot_image(self) -> tuple[Step, str]:
        """(step, output) of the file U-Boot boots: the uImage, or the kernel's image."""
        if self.board.kernel.uimage:
            return self.get("image"), "image"
        return self.get("kernel"), "image"

    @property
    def has_dtb(self) -> bool:
        """Whether the board has a DTB of its own (its .dts or an in-tree target)."""
        return self.board.kernel.dts is not None or self.board.kernel.dtb is not None

    @property
    def _system(self):
        assert self.board.system is not None
        return self.board.system

    # -- core steps -------------------------------------------------------------

    def _source(self) -> Step:
        return unpack_step(f"{self.kb.kernel.source}-src", self.kb.kernel_source)

    def _tree(self) -> Step:
        return patched_step(f"{self.kb.kernel.source}-patched", self.get("source"),
                            self.kb.kernel.patches)

    def _kernel(self) -> Step:
        # The loader refuses a built-in initramfs in a kernel that boards share.
        builtin = self.board.system is not None and self._system.initramfs == "builtin"
        return kernel_step(self.kb, self.get("tree"), self.get("kconfig"), self.tc, cores(),
                           self.get("initramfs") if builtin else None)

    def _kernel_parts(self) -> Step:
        u = self.board.kernel.uimage
        builtin = self.board.system is not None and self._system.initramfs == "builtin"
        return kernel_parts_step(
            self.board, self.get("kernel"), self.get("image") if u else None,
            self.get("dtb") if u and u.append_dtb and self.has_dtb else None,
            self.get("initramfs") if builtin else None)

    def _dtb_check(self) -> Step:
        return dtb_check_step(f"{self.board.name}-dtb-check", self.get("tree"),
                              self.get("driver-index"), self.get("kconfig"), self.get("dtb"),
                              self.board.kernel.unserved)

    def _uboot(self) -> Step:
        spec = self.board.uboot.build
        assert spec is not None
        self.steps["uboot-src"] = unpack_step(f"{spec.source}-src", self.board.sources[spec.source])
        tree = patched_step(f"{spec.source}-patched", self.steps["uboot-src"], spec.patches)
        self.steps["uboot-config"], step = uboot_steps(self.board, tree, self.tc, cores())
        if spec.control_dts is None and self.board.signing is None:
            return step
        # U-Boot's own control DTB (with the [signing] keys) appended to it.
        from embedbuild.steps.uboot_control import uboot_control_step
        from embedbuild.vboot.keys import signing_keys

        self.steps["uboot-build"] = step
        s = self.board.signing
        keys = signing_keys(s.keys, s.algo, where=f"{self.board.dir}/board.toml: "
                            "signing.keys") if s else []
        return uboot_control_step(self.board, step, keys)

    def _initramfs(self) -> Step:
        """The generated files, each package that puts files into the image, and the
        overlays as segments, and their concatenation into the initramfs."""
        board, system, tc = self.board, self._system, self.tc
        elf = {"identity": elf_identity(board.cross_compile), "libdirs": tc.sysroot_dirs(),
               "board": board.name}
        comp = system.compression
        recipes = userland(system.packages)
        generated = generated_entries(system, board.name, [d for r in recipes for d in r.dirs])
        generated += mark_good_entries(board)
        # First: it makes the folders the other segments fill.
        segments = [ir.segment_step(
            f"{board.name}-seg-base", "the generated files (init and config)",
            lambda _ctx, g=generated: g, inputs={"entries": ir.digest_entries(generated)},
            deps={}, compression=comp, elf=elf)]
        # A static library puts nothing into the image: the programs carry it.
        for r in recipes:
            if not r.library or r.installs:
                segments.append(ir.segment_step(
                    f"{board.name}-seg-{r.name}", r.label, ir.tree_of("pkg"), inputs={},
                    deps={"pkg": self.package(r.name)}, compression=comp, elf=elf))
        for o in system.overlays:
            entries = overlay_entries(o)
            segments.append(ir.segment_step(
                f"{board.name}-seg-overlay-{o.name}", f"overlay {o.name!r}",
                lambda _ctx, es=entries: es, inputs={"entries": ir.digest_entries(entries)},
                deps={}, compression=comp, elf=elf))
        if (ap := system.access_point) is not None:
            radios = {r.name: r for r in board.radios}
            public = ap_files.public_entries(ap, radios)
            segments.append(ir.segment_step(
                f"{board.name}-seg-access-point", "the access point's configuration",
                lambda _ctx, es=public: es, inputs={"entries": ir.digest_entries(public)},
                deps={}, compression=comp, elf=elf))
            # Its own segment, so that the secret reaches only the items made from it:
            # the rest of the image stays shareable.
            secret = ap_files.secret_entries(ap)
            segments.append(ir.segment_step(
                f"{board.name}-seg-secrets", "the secrets (never shared)",
                lambda _ctx, es=secret: es, inputs={"secret": ap_files.secret_digest(secret)},
                deps={}, compression=comp, elf=elf, secret=True))
        for i, seg in enumerate(segments):
            self.steps[f"segment{i}"] = seg
        return ir.concat_step(f"{board.name}-initramfs", segments, comp)

    def _kernel_needs(self) -> Step:
        """The kernel symbols the system's packages need, checked in the final config."""
        needs = [(f"package {r.name}", symbol, value) for r in userland(self._system.packages)
                 for symbol, value in r.kernel.items()]
        if self._system.access_point is not None:
            # The LAN bridge the radios and wired ports join.
            needs.append(("the access point", "BRIDGE", "y"))
        return kernel_needs_step(f"{self.board.name}-kernel-needs", self.get("kconfig"), needs,
                                 self.kb)


def plan_board(board: Board) -> Plan:
    """The step graph of a board (and its system, when it has one): every output that
    applies to the board, collected by the result step."""
    planner = Planner(board)
    outputs = applicable(board)
    published = [o.plan(planner) for o in outputs]
    planner.steps["result"] = result_step(board, outputs, published)
    return Plan(board, planner.steps, [o.name for o in outputs])
