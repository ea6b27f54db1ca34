"""``python -m psdeploy``: the same as the ``psdeploy`` command."""

from psdeploy.cli import main

main()
