"""``python -m medcad`` runs the CLI (also what ``torchrun -m medcad`` needs)."""

from medcad.cli import main

if __name__ == "__main__":
    main()
