"""Package discovery for pyproject.toml: every package under the parts' folders (agent/, protocol/, firmware/,
emulator/), installed as a subpackage of `airwatt`. pyproject.toml's own find cannot add the prefix."""

from setuptools import find_packages, setup

PARTS = ("agent", "protocol", "firmware", "emulator")
FOUND = find_packages(include=[name for part in PARTS for name in (part, part + ".*")])

setup(
    packages=["airwatt." + name for name in FOUND],
    package_dir={"airwatt." + name: name.replace(".", "/") for name in FOUND},
)
