"""Kconfig requests: fragments merged, checked against a Kconfig tree, verified after.

Used for the kernel, busybox and U-Boot: fragments are parsed into
requests, conflicts across fragments are refused, unknown symbols are refused,
and every requested value is checked in the final .config. A value that did
not survive is explained from the Kconfig dependencies.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import BoardError, ConfigError

_LINE_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_LINE_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One requested value: ``CONFIG_<symbol>=<value>`` at file:line."""

    symbol: str
    value: str  # y, m, n, a number, or a string without its quotes
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def config_line(self) -> str:
        """The request as a .config line."""
        if self.value == "n":
            return f"# CONFIG_{self.symbol} is not set"
        if self.value in ("y", "m") or re.fullmatch(r"-?\d+|0x[0-9a-fA-F]+", self.value):
            return f"CONFIG_{self.symbol}={self.value}"
        return f'CONFIG_{self.symbol}="{_escape(self.value)}"'


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def parse_config_text(text: str, file: Path) -> list[Request]:
    """Parse .config-format text; anything else than assignments and comments is an error."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _LINE_UNSET.match(line):
            out.append(Request(m.group(1), "n", file, n))
        elif not line or line.startswith("#"):
            continue
        elif m := _LINE_SET.match(line):
            value = m.group(2).strip()
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise BoardError("unterminated string value", where=f"{file}:{n}")
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            elif value == "":
                raise BoardError(
                    f"CONFIG_{m.group(1)} has no value",
                    where=f"{file}:{n}",
                    hint="write y, m, a number, a quoted string, or "
                    f"'# CONFIG_{m.group(1)} is not set'",
                )
            out.append(Request(m.group(1), value, file, n))
        else:
            raise BoardError(
                f"not a Kconfig assignment: {line!r}",
                where=f"{file}:{n}",
                hint="lines are CONFIG_NAME=value, '# CONFIG_NAME is not set', or comments",
            )
    return out


def merge_fragments(fragments: Mapping[Path, str]) -> dict[str, Request]:
    """Merge fragments in order. The same symbol with two values is an error naming both places."""
    merged: dict[str, Request] = {}
    conflicts = []
    for path, text in fragments.items():
        for r in parse_config_text(text, path):
            old = merged.get(r.symbol)
            if old is not None and old.value != r.value:
                conflicts.append(
                    f"CONFIG_{r.symbol}: {old.config_line()} at {old.where} "
                    f"but {r.config_line()} at {r.where}"
                )
                continue
            merged.setdefault(r.symbol, r)
    if conflicts:
        raise BoardError(
            "conflicting values across fragments:\n  " + "\n  ".join(conflicts),
            hint="keep one value per symbol: remove or change one of the two lines",
        )
    return merged


def fragments_digest(fragments: Mapping[Path, str]) -> list[dict[str, str]]:
    """Name and sha256 of each fragment, in order: what a config step's key covers."""
    return [{"name": p.name, "sha256": hashlib.sha256(t.encode()).hexdigest()}
            for p, t in fragments.items()]


def read_config(path: Path) -> dict[str, str]:
    """A .config file as symbol -> value (n for '# ... is not set')."""
    return {r.symbol: r.value for r in parse_config_text(path.read_text(), path)}


# -- kconfiglib over a real tree ------------------------------------------------

# kconfiglib reads its environment from os.environ: parse one tree at a time.
_KCONFIGLIB_LOCK = threading.Lock()


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def open_kconfig(srctree: Path, env: Mapping[str, str], top: str = "Kconfig"):
    """Parse a Kconfig tree with kconfiglib (thread-safe, warnings off)."""
    import kconfiglib

    class Kconfig(kconfiglib.Kconfig):
        # kconfiglib 14.1 predates the bare 'modules' keyword (Linux >= 5.13);
        # it means the same as 'option modules'.
        def _tokenize(self, s):
            if s.strip() == "modules":
                s = s.replace("modules", "option modules", 1)
            return super()._tokenize(s)

    with _KCONFIGLIB_LOCK, _environ({"srctree": str(srctree), **env}):
        try:
            return Kconfig(str(srctree / top), warn=False, suppress_traceback=False)
        except kconfiglib.KconfigError as e:
            raise ConfigError(f"kconfiglib cannot parse the tree: {e}") from None


def check_known(kconf, requests: Mapping[str, Request]) -> None:
    """Refuse symbols the tree does not define, all at once, with near-miss suggestions."""
    unknown = []
    names = list(kconf.syms)
    for r in requests.values():
        sym = kconf.syms.get(r.symbol)
        if sym is None or not sym.nodes:
            close = difflib.get_close_matches(r.symbol, names, n=1, cutoff=0.8)
            hint = f" (did you mean CONFIG_{close[0]}?)" if close else ""
            unknown.append(f"{r.where}: unknown symbol CONFIG_{r.symbol}{hint}")
    if unknown:
        raise ConfigError(
            f"{len(unknown)} unknown Kconfig symbol(s):\n  " + "\n  ".join(unknown),
            hint="fix the name or remove the line; the symbol does not exist in this source tree",
        )


def apply_requests(kconf, base: Path, requests: Mapping[str, Request], out: Path) -> None:
    """Write base config + requests to ``out`` as a .config."""
    with _KCONFIGLIB_LOCK:
        kconf.load_config(str(base))
        for r in requests.values():
            kconf.syms[r.symbol].set_value(r.value)
        kconf.write_config(str(out), save_old=False)


def verify(kconf, final: Path, requests: Mapping[str, Request], after: str) -> None:
    """Every requested value must be in the final .config; explain each one that is not.

    ``after`` names what wrote the final .config (e.g. "make allnoconfig"), for the message.
    """
    got = read_config(final)
    lost = []
    with _KCONFIGLIB_LOCK:
        kconf.load_config(str(final))
        for r in requests.values():
            have = got.get(r.symbol, "n")
            if _same(have, r.value):
                continue
            sym = kconf.syms[r.symbol]
            why = explain(sym, r.value, requests)
            lost.append(f"{r.where}: {r.config_line()} requested, got {have or 'n'}: {why}")
    if lost:
        raise ConfigError(
            f"{len(lost)} requested value(s) did not survive {after}:\n  " + "\n  ".join(lost),
            hint="enable what they depend on in a fragment, or drop the request",
        )


def _same(have: str, want: str) -> bool:
    if have == want:
        return True
    try:
        return int(have, 0) == int(want, 0)
    except ValueError:
        return False


def explain(sym, want: str, requests: Mapping[str, Request] | None = None) -> str:
    """Why a symbol does not have the wanted value, from its Kconfig dependencies.

    With the requests, a choice conflict names where the winning symbol was asked for.
    """
    import kconfiglib as k

    def fmt(sc) -> str:
        if isinstance(sc, k.Symbol) and not sc.is_constant:
            if not sc.nodes:  # referenced, but defined only under another ARCH (or nowhere)
                return f"{sc.name} [not defined in this tree for this ARCH]"
            return f"{sc.name} [={sc.str_value}]"
        return k.standard_sc_expr_str(sc)

    def unmet(expr, need: int) -> list[str]:
        return [k.expr_str(e, fmt) for e in k.split_expr(expr, k.AND) if k.expr_value(e) < need]

    def selectors(level: int) -> str:
        return ", ".join(k.expr_str(e, fmt) for e in k.split_expr(sym.rev_dep, k.OR)
                         if k.expr_value(e) >= level)

    # orig_type: kconfiglib reports a tristate as a bool while modules are off.
    if sym.orig_type in (k.BOOL, k.TRISTATE):
        if want not in ("y", "m", "n"):
            if sym.orig_type == k.BOOL:
                return f"{want!r} is not a bool value: use y or n"
            return f"{want!r} is not a tristate value: use y, m or n"
        need = {"n": 0, "m": 1, "y": 2}[want]
        if need == 0:
            reasons = []
            if sym.rev_dep is not sym.kconfig.n and k.expr_value(sym.rev_dep):
                reasons.append("selected by " + selectors(1))
            prompts = [n for n in sym.nodes if n.prompt]
            if not prompts:
                reasons.append("it has no prompt, so it cannot be switched off by hand")
            elif not sym.visibility:
                conds = [c for n in prompts for c in unmet(n.prompt[1], 1)]
                reasons.append(
                    f"its prompt is hidden (needs {' && '.join(conds)}), "
                    f"so its default {sym.str_value} applies"
                )
            return "; ".join(reasons) or "forced by its default"
        if need == 1 and sym.orig_type == k.BOOL:
            return "it is a bool: use y or n"
        if need == 1 and sym.kconfig.modules.tri_value == 0:
            return f"modules are disabled ({sym.kconfig.modules.name} [=n])"
        if need == 1 and k.expr_value(sym.rev_dep) == 2:
            return f"selected by {selectors(2)}, which makes it y"
        deps = unmet(sym.direct_dep, need)
        if sym.choice is not None and deps == ["<choice>"]:
            # The choice itself is hidden: say what it depends on.
            deps = unmet(sym.choice.direct_dep, need) or deps
        if deps:
            return "depends on " + " && ".join(deps)
        prompts = [n for n in sym.nodes if n.prompt]
        if not prompts:
            sel = k.expr_str(sym.rev_dep, fmt) if sym.rev_dep is not sym.kconfig.n else "nothing"
            return f"it has no prompt and can only be selected (selected by: {sel})"
        conds = [c for n in prompts for c in unmet(n.prompt[1], need)]
        if conds:
            return "its prompt is only visible if " + " && ".join(conds)
        if sym.choice is not None:
            return _choice_conflict(sym, requests or {})
        return f"its value is limited to {sym.str_value} (visibility {sym.visibility})"
    if sym.orig_type in (k.INT, k.HEX):
        base, kind = (10, "decimal") if sym.orig_type == k.INT else (16, "hex")
        try:
            value = int(want, base)
        except ValueError:
            return f"{want!r} is not a {kind} number"
        for lo, hi, cond in sym.ranges:
            if k.expr_value(cond):  # the first active range is the one that applies
                with contextlib.suppress(ValueError):
                    if not int(lo.str_value, base) <= value <= int(hi.str_value, base):
                        return f"outside its range [{lo.str_value}, {hi.str_value}]"
                break
    if not sym.visibility:
        deps = unmet(sym.direct_dep, 2) or unmet(sym.direct_dep, 1)
        if deps:
            return "depends on " + " && ".join(deps)
        return "it has no visible prompt, so its default is used"
    return "the value was not accepted"


def _choice_conflict(sym, requests: Mapping[str, Request]) -> str:
    """A choice takes one symbol: name the one it took and where it was asked for."""
    sel = sym.choice.selection
    if sel is None:
        return "it is in a choice where another symbol is selected"
    r = requests.get(sel.name)
    if r is not None and r.value == "y":
        return (f"it is in a choice where CONFIG_{sel.name} is selected, requested at "
                f"{r.where}: request only one of them")
    return (f"it is in a choice where CONFIG_{sel.name} is selected "
            "(by the base config or the choice's default)")
