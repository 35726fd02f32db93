"""What every ``mast3r-ros`` subcommand gets, checked on every registered one (SUBCOMMANDS,
so commands added later are covered too): --version, defaults in --help, no raw markup,
bad input -> ``mast3r-ros CMD: error: ...`` + exit 2 + no traceback; a closed pipe exits
quietly; faiss's loader is quiet without -v; --out checks before work; progress bars."""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.cli import SUBCOMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _run(argv, capsys) -> tuple[int, str, str]:
    """main(argv) in-process; argparse's exits become return codes."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _fill_required(p: argparse.ArgumentParser, tmp: Path, out_value: str) -> list[str]:
    """argv that satisfies argparse with plausible but unusable values: input paths that do
    not exist, ``--out``-like options set to ``out_value``."""
    argv: list[str] = []
    groups = [g for g in p._mutually_exclusive_groups if g.required]
    chosen = {id(g._group_actions[0]) for g in groups}
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        needed = a.required or id(a) in chosen or (not a.option_strings and a.nargs not in ("?", "*"))
        if not needed and not (a.option_strings and a.dest in ("out", "output")):
            continue
        if a.choices:
            value = str(next(iter(a.choices)))
        elif a.type in (int, float):
            value = "1"
        elif a.dest in ("out", "output"):
            value = out_value
        else:
            value = str(tmp / f"missing_{a.dest}.bin")
        if a.option_strings:
            argv += [a.option_strings[-1], value]
        else:
            argv.append(value)
    return argv


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_command_help_shows_defaults_without_markup(name, capsys):
    rc, out, err = _run([name, "--help"], capsys)
    assert rc == 0, err
    assert out.startswith(f"usage: mast3r-ros {name}")
    assert "`" not in out, f"raw markup in `mast3r-ros {name} --help`:\n{out}"
    p = _subparser(name)
    for a in p._actions:  # every option with a real default states it
        if (a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
                and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))):
            help_text = (a.help or "").lower()
            assert "default" in help_text or f"(default: {a.default})" in " ".join(out.split()), \
                (name, a.dest)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_command_rejects_bad_input_cleanly(name, tmp_path, capsys):
    """Unknown flag, non-numeric values for numeric options, unknown choices, missing input
    files and an --out under a regular file: each ends with exit 2 and the error line."""
    p = _subparser(name)
    blocker = tmp_path / "regular_file"
    blocker.write_text("not a folder")
    base = _fill_required(p, tmp_path, str(blocker / "sub" / "out.npz"))
    cases = [[name, "--no-such-flag", "1"] + base]
    for a in p._actions:
        if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if a.type in (int, float):
            cases.append([name] + base + [a.option_strings[-1], "not-a-number"])
        elif a.choices:
            cases.append([name] + base + [a.option_strings[-1], "no-such-choice"])
    has_inputs = any(a.required or not a.option_strings for a in p._actions
                     if not isinstance(a, argparse._HelpAction)) or any(
        g.required for g in p._mutually_exclusive_groups)
    if has_inputs or any(a.dest in ("out", "output") for a in p._actions):
        cases.append([name] + base)  # missing inputs and/or --out under a file
    for argv in cases:
        rc, _, err = _run(argv, capsys)
        assert rc == 2, f"{argv}: exit {rc}\n{err}"
        assert f"mast3r-ros {name}: error:" in err, f"{argv}:\n{err}"
        assert "Traceback" not in err, f"{argv}:\n{err}"


def test_version(capsys):
    import mast3r_ros

    rc, out, _ = _run(["--version"], capsys)
    assert rc == 0 and out.strip() == f"mast3r-ros {mast3r_ros.__version__}"


def test_synth_checks_out_before_rendering(tmp_path, capsys):
    """An existing DIR/bag is refused at once (it used to render everything first, then die
    with a traceback); 400 frames at 512x384 would take minutes to render."""
    (tmp_path / "bag").mkdir()
    rc, _, err = _run(["synth", "--frames", "400", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "already holds a bag/ folder" in err and "Traceback" not in err
    assert not (tmp_path / "groundtruth.tum").exists()  # refused before rendering or writing


def test_out_writes_exactly_the_named_file(tmp_path, capsys):
    """--out x.txt writes x.txt (np.savez alone would write x.txt.npz)."""
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(2, 16, 16, 24)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=-1, keepdims=True)
    src = tmp_path / "pred.npz"
    np.savez(src, view1_desc=desc[0], view2_desc=desc[0])  # identical maps: identity matches
    out = tmp_path / "matches.txt"
    rc, _, err = _run(["match", "--desc", str(src), "--out", str(out), "--border", "0",
                       "--subsample", "4"], capsys)
    assert rc == 0, err
    assert out.is_file() and not (tmp_path / "matches.txt.npz").exists()
    m = np.load(out)
    assert len(m["xy1"]) == 16 and np.array_equal(m["xy1"], m["xy2"])


def test_closed_pipe_exits_quietly(tmp_path):
    """`mast3r-ros CMD | head -1`: the reader goes away after one line of a long output; the
    command stops with status 141 (128 + SIGPIPE) and prints no traceback. The command is a
    stand-in module registered for the run (any real one prints too little to fill a pipe)."""
    (tmp_path / "spam_cmd.py").write_text(
        "def add_parser(sub):\n"
        "    sub.add_parser('spam').set_defaults(func=run)\n"
        "def run(args):\n"
        "    for i in range(500000):\n"
        "        print('line', i)\n")
    path = os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from mast3r_ros.cli import SUBCOMMANDS, main\n"
         "SUBCOMMANDS['spam'] = ('spam_cmd', 'print many lines')\n"
         "sys.exit(main(['spam']))\n"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader is gone
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert first.startswith(b"line 0"), err
    assert rc == 141, (rc, err)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_faiss_loader_quiet_unless_verbose():
    """Importing faiss logs 'Loading faiss ...' at INFO; the CLI's logging shows it only with
    -v, while our own INFO messages stay."""
    pytest.importorskip("faiss")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    seen = {}
    for verbose in (False, True):
        code = ("import logging\n"
                "from mast3r_ros.cli import _setup_logging\n"
                f"_setup_logging({verbose})\n"
                "import faiss\n"
                "logging.getLogger('mast3r_ros.cli').info('our own message')\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        assert "our own message" in out.stderr
        seen[verbose] = "Loading faiss" in out.stderr
    assert seen == {False: False, True: True}, seen


def test_progress_bar_has_count_rate_and_eta(monkeypatch):
    from mast3r_ros.cli._common import progress

    stream = io.StringIO()
    monkeypatch.setenv("MAST3R_PROGRESS", "1")
    assert list(progress(range(5), desc="render", unit="frame", file=stream)) == list(range(5))
    text = stream.getvalue()
    assert "render" in text and "5/5" in text and "frame/s" in text and "<" in text  # ETA
    monkeypatch.setenv("MAST3R_PROGRESS", "0")
    stream = io.StringIO()
    assert list(progress(range(3), file=stream)) == [0, 1, 2] and stream.getvalue() == ""


def test_synth_shows_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAST3R_PROGRESS", "1")
    rc, out, err = _run(["synth", "--frames", "3", "--width", "64", "--height", "48",
                         "--out", str(tmp_path / "d")], capsys)
    assert rc == 0, err
    assert "render" in err and "3/3" in err and "frame/s" in err
    assert (tmp_path / "d" / "groundtruth.tum").is_file()


def test_match_desc_without_torch_says_so(tmp_path):
    """The matcher runs in torch (CPU is enough); without torch `match --desc` says exactly
    that instead of failing on an import."""
    src = tmp_path / "pred.npz"
    np.savez(src, view1_desc=np.ones((4, 4, 24), np.float32), view2_desc=np.ones((4, 4, 24), np.float32))
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError('No module named torch', name='torch')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from mast3r_ros.cli import main\n"
            f"sys.exit(main(['match', '--desc', {str(src)!r}, '--out', {str(tmp_path / 'm.npz')!r}]))\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    assert "mast3r-ros match: error:" in out.stderr and "torch" in out.stderr
    assert "Traceback" not in out.stderr
