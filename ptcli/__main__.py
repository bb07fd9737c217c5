"""``python -m ptcli``: the same CLI as the ``ptcli`` command."""

from ptcli.cli import main

if __name__ == "__main__":
    main()
