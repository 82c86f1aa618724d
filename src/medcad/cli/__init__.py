"""The ``medcad`` command line: thin commands that parse arguments and call the library.

Each command lives in a small module of this package and imports heavy libraries (torch,
SimpleITK, ...) inside its function, so ``medcad --help`` stays instant. Errors for people
(:class:`medcad.errors.MedcadError`) print one line and exit 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="medcad",
    help="Medical scans from raw files to findings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _register() -> None:
    """Adds every command module's commands to ``app``; each module owns one command or group."""
    from medcad.cli import demo, detect, evaluate, info, models, synth
    from medcad.cli import data, evaluate_images, predict, train
    from medcad.cli import locate, train_l3
    from medcad.cli import preprocess, volume_cls
    from medcad.cli import cache, report

    for module in (info, demo, evaluate, synth, detect, models, data, train, predict, evaluate_images, train_l3, locate,
                   preprocess, volume_cls, cache, report):
        module.register(app)


#: Two-word spellings of single commands: ``medcad evaluate FINDINGS`` takes a path, so the image
#: evaluation is its own command; ``medcad evaluate image-cls DIR`` is read as ``evaluate-images DIR``.
ALIASES = {("evaluate", "image-cls"): "evaluate-images"}


def expand_aliases(argv: list[str]) -> list[str]:
    """``argv`` (without the program name) with a two-word alias at the command position replaced."""
    position = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if position is not None and tuple(argv[position:position + 2]) in ALIASES:
        return argv[:position] + [ALIASES[tuple(argv[position:position + 2])]] + argv[position + 2:]
    return argv


def main() -> None:
    """Console entry point: runs the app, turning errors into one-line messages."""
    from medcad.errors import MedcadError

    _register()
    try:
        app(args=expand_aliases(sys.argv[1:]))
    except MedcadError as error:
        if _state["debug"]:
            raise
        print(f"medcad: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("medcad: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # an internal error: still one line unless --debug
        if _state["debug"]:
            raise
        print(f"medcad: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
