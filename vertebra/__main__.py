"""``python -m vertebra ...``: the same CLI as the ``vertebra`` script (and what ``torchrun -m vertebra train`` runs)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
