"""``python -m streamcast`` runs the ``streamcast`` command."""

from streamcast.tools.cli import main

if __name__ == "__main__":
    main()
