"""The ``mast3r-ros`` command line.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` (registers its arguments, sets ``func``) and is imported
lazily, so ``mast3r-ros --help`` stays fast and works without torch.

What every subcommand gets from here, without doing anything: ``--version``, defaults shown
in ``--help`` (``HelpFormatter``), a quiet exit when its output pipe closes (``| head``) and
third-party log noise (faiss's loader, matplotlib) silenced unless ``-v``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import textwrap

# subcommand name -> (module, one-line help). Modules are imported only when needed.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("mast3r_ros.cli.info", "print versions and what is available (torch, CUDA, ROS)"),
    "doctor": ("mast3r_ros.cli.doctor", "check this environment (numpy ABI, torch/CUDA, rclpy, interfaces, OpenCV)"),
    "match": ("mast3r_ros.cli.match", "match two images (or an infer .npz) with fast reciprocal matching"),
    "bench-match": ("mast3r_ros.cli.bench_match", "time FRM vs dense mutual NN (and PnP solvers) on CPU/GPU"),
    "synth": ("mast3r_ros.cli.synth", "render a synthetic scene into a rosbag2 + groundtruth.tum"),
    "slam": ("mast3r_ros.cli.slam", "track a rosbag2 offline: trajectory, keyframes, point cloud, status"),
    "eval": ("mast3r_ros.cli.eval", "ATE/RPE of a TUM trajectory against ground truth, with a plot"),
    "infer": ("mast3r_ros.cli.infer", "run MASt3R on an image pair and write an .npz"),
    "convert": ("mast3r_ros.cli.convert", "convert a MASt3R .pth checkpoint to .safetensors"),
    "bench": ("mast3r_ros.cli.bench", "time the MASt3R encoder and decoder+heads"),
    "relocalize": ("mast3r_ros.cli.relocalize", "metric pose of a query image from one reference image"),
    "reloc-eval": ("mast3r_ros.cli.reloc_eval", "map-free relocalization metrics on pairs of a bag with ground truth"),
    "align": ("mast3r_ros.cli.align", "sparse global alignment of an image set -> poses.tum, intrinsics.json, cloud.ply"),
}

# Loggers of third-party libraries that talk at INFO (faiss: "Loading faiss with AVX2
# support..."); shown only with -v.
NOISY_LOGGERS = ("faiss", "faiss.loader", "matplotlib", "PIL", "numexpr", "h5py")


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped paragraph by paragraph (blank lines kept), ``(default: X)``
    appended to every option that has a meaningful default and does not state one itself,
    and reST/Markdown code markup (double or single backquotes) rendered as plain 'x'."""

    _MARKUP = re.compile(r"``?([^`]+)``?")

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default" in text.lower() or action.default is None
                or action.default is False or action.default == argparse.SUPPRESS
                or isinstance(action, (argparse._StoreTrueAction, argparse._VersionAction,
                                       argparse._HelpAction))
                or action.option_strings == []):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        return self._MARKUP.sub(r"'\1'", super()._expand_help(action))

    def _format_text(self, text: str) -> str:
        return super()._format_text(self._MARKUP.sub(r"'\1'", text))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n\s*\n", text.strip())
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                         subsequent_indent=indent) for p in paragraphs)


class _SubcommandParser(argparse.ArgumentParser):
    """The parser class of every subcommand: ``HelpFormatter`` whatever the module asked."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the subcommand ``load`` (if any) has its module imported."""
    from mast3r_ros import __version__

    parser = argparse.ArgumentParser(
        prog="mast3r-ros", formatter_class=HelpFormatter,
        description="MASt3R relocalization, matching and SLAM tools (ROS-free).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"mast3r-ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubcommandParser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == load:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def _closed_pipe() -> int:
    """The reader of our output went away (``mast3r-ros ... | head``): stop quietly.

    Python would otherwise print a BrokenPipeError when flushing stdout at exit; pointing
    stdout at /dev/null first avoids that. Exit status 141 = 128 + SIGPIPE, as a C tool's.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (e.g. captured in tests)
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser: "mast3r-ros CMD: error: ..."
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (sub.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return _closed_pipe()
    except ModuleNotFoundError as exc:
        # e.g. a pip install without torch: say what to install instead of a traceback
        print(f"mast3r-ros {args.command}: error: needs the Python package {exc.name!r}, which is "
              f"not installed (torch: install the CPU or CUDA build you want first; see README)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # Ctrl-C: quiet, the conventional status
    except Exception as exc:  # noqa: BLE001 - translated in one place (cli/_errors.py)
        from mast3r_ros.cli._errors import describe

        message, status = describe(exc, args, parser)
        logging.getLogger("mast3r_ros").debug("failure", exc_info=True)
        print(f"mast3r-ros {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
