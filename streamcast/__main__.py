"""``python -m streamcast`` runs the ``streamcast`` command."""

from streamcast.cli import main

if __name__ == "__main__":
    main()
