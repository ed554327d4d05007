"""``python -m medm2g_cli`` runs the same CLI as the ``medm2g`` script."""

from medm2g_cli.app import main

main()
