"""``python -m metis_core``: the ``metis`` command line."""

from metis_core.cli import main

if __name__ == "__main__":
    main()
