"""``python -m pullkv`` is the ``pullkv`` command."""

from pullkv.cli import main

main(prog_name="pullkv")
