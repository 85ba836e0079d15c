"""libyaml: the YAML parser libubootenv reads its configuration files with (Debian's
source package libyaml, whose tarball has no generated configure: built with its
CMake build), staged as a static library."""

from __future__ import annotations

from embedbuild.buildsys.cmake import CmakeRecipe
from embedbuild.recipe import recipe


@recipe("libyaml")
class Libyaml(CmakeRecipe):
    """A YAML 1.1 parser and emitter in C: its header and static library."""

    source = "libyaml"
    library = True
    cmake_args = ("-DBUILD_TESTING=OFF",)
    stages = ("include/yaml.h", "lib/libyaml.a")
