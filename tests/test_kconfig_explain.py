"""Why a requested value did not survive, on a tiny Kconfig tree in the kernel's
dialect (tests/data/kconfig, bare `modules` keyword and `source "arch/$(SRCARCH)/..."`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedbuild import kconfig
from embedbuild.errors import ConfigError

TREE = Path(__file__).parent / "data" / "kconfig"


def _verify(tmp_path: Path, fragment: str, arch: str = "arm") -> str:
    """Apply a fragment to an empty base; what verify says ("" when all survived)."""
    frag = tmp_path / "board.config"
    frag.write_text(fragment)
    requests = kconfig.merge_fragments({frag: fragment})
    kconf = kconfig.open_kconfig(TREE, {"ARCH": arch, "SRCARCH": arch})
    kconfig.check_known(kconf, requests)
    base = tmp_path / "base.config"
    base.write_text("")
    final = tmp_path / ".config"
    kconfig.apply_requests(kconf, base, requests, final)
    try:
        kconfig.verify(kconf, final, requests, after="applying the request")
    except ConfigError as e:
        return str(e)
    return ""


def _reason(tmp_path: Path, fragment: str, symbol: str, arch: str = "arm") -> str:
    """The explanation verify gives for one symbol."""
    text = _verify(tmp_path, fragment, arch)
    lines = [line for line in text.splitlines() if f"CONFIG_{symbol}=" in line
             or f"# CONFIG_{symbol} is not set" in line]
    assert len(lines) == 1, text
    return lines[0].split("requested, got ", 1)[1]


def test_values_that_survive_verify(tmp_path: Path):
    assert _verify(tmp_path, "CONFIG_MODULES=y\nCONFIG_NET=y\nCONFIG_VIRTIO=y\n"
                             "CONFIG_VIRTIO_NET=m\nCONFIG_LOG_BUF_SHIFT=14\n"
                             "CONFIG_CC_OPTIMIZE_FOR_SIZE=y\n") == ""


def test_module_with_modules_off_says_modules(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_NET=y\nCONFIG_VIRTIO=y\nCONFIG_VIRTIO_NET=m\n", "VIRTIO_NET")
    assert "modules are disabled (MODULES [=n])" in why
    assert "bool" not in why


def test_module_for_a_bool_says_bool(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_MODULES=y\nCONFIG_NET=m\n", "NET")
    assert "it is a bool: use y or n" in why


def test_not_a_number_is_not_out_of_range(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_LOG_BUF_SHIFT=abc\n", "LOG_BUF_SHIFT")
    assert "'abc' is not a decimal number" in why
    assert "range" not in why


def test_out_of_range(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_LOG_BUF_SHIFT=30\n", "LOG_BUF_SHIFT")
    assert "outside its range [12, 25]" in why


def test_dependency_missing_on_this_arch(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_AG71XX=y\n", "AG71XX", arch="arm")
    assert why.endswith("depends on ATH79 [not defined in this tree for this ARCH]")
    assert "[=ATH79]" not in why


def test_dependency_off_on_an_arch_that_has_it(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_AG71XX=y\n", "AG71XX", arch="mips")
    assert why.endswith("depends on ATH79 [=n]")
    assert _verify(tmp_path, "CONFIG_ATH79=y\nCONFIG_AG71XX=y\n", arch="mips") == ""


def test_unmet_dependencies_are_named(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_VIRTIO_NET=y\nCONFIG_NET=y\n", "VIRTIO_NET")
    assert why.endswith("depends on VIRTIO [=n]")


def test_choice_conflict_names_where_the_other_was_requested(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y\n"
                            "CONFIG_CC_OPTIMIZE_FOR_SIZE=y\n", "CC_OPTIMIZE_FOR_PERFORMANCE")
    assert "CONFIG_CC_OPTIMIZE_FOR_SIZE is selected" in why
    assert f"requested at {tmp_path / 'board.config'}:2" in why


def test_choice_taken_by_the_base_config_is_named_as_such(tmp_path: Path):
    base = tmp_path / "base.config"
    base.write_text("CONFIG_CC_OPTIMIZE_FOR_SIZE=y\n")
    kconf = kconfig.open_kconfig(TREE, {"ARCH": "arm", "SRCARCH": "arm"})
    kconf.load_config(str(base))
    why = kconfig.explain(kconf.syms["CC_OPTIMIZE_FOR_PERFORMANCE"], "y", {})
    assert why == ("it is in a choice where CONFIG_CC_OPTIMIZE_FOR_SIZE is selected "
                   "(by the base config or the choice's default)")


def test_selected_symbol_cannot_be_switched_off(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_CFG80211=y\n# CONFIG_FW_LOADER is not set\n", "FW_LOADER")
    assert "selected by CFG80211 [=y]" in why


def test_selected_y_cannot_be_a_module(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_MODULES=y\nCONFIG_CFG80211=y\nCONFIG_FW_LOADER=m\n",
                  "FW_LOADER")
    assert why.endswith("selected by CFG80211 [=y], which makes it y")


def test_hidden_prompt_keeps_the_default(tmp_path: Path):
    why = _reason(tmp_path, "# CONFIG_BPF_SYSCALL is not set\n", "BPF_SYSCALL")
    assert "its prompt is hidden (needs EXPERT [=n]), so its default y applies" in why


def test_symbol_without_prompt(tmp_path: Path):
    why = _reason(tmp_path, "CONFIG_CRC32=y\n", "CRC32")
    assert "it has no prompt and can only be selected (selected by: nothing)" in why


@pytest.mark.parametrize("value", ["yes", "1"])
def test_not_a_bool_value(tmp_path: Path, value: str):
    why = _reason(tmp_path, f"CONFIG_NET={value}\n", "NET")
    assert f"'{value}' is not a bool value" in why


def test_unknown_symbol_is_refused_with_a_suggestion(tmp_path: Path):
    with pytest.raises(ConfigError, match="did you mean CONFIG_VIRTIO_NET"):
        _verify(tmp_path, "CONFIG_VIRTIO_NETT=y\n")
