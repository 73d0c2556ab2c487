"""The command line: options spelled as the docs spell them, and one line for a mistake.

Tornado's ``--help`` prints option names with dashes (``--max-clients``) while every page of
this project writes them with underscores (``--max_clients``); both work. Tornado answers a
mistyped option or a bad value with a traceback. ``parse`` prints the underscore spelling, and
turns a mistake into one line that names the option and points at ``--help``, with exit status
2, as argparse does. This module imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys

import tornado.options
from tornado.options import options

USAGE_ERROR = 2


def parse(argv: list[str], program: str = "app.py") -> None:
    """Parse the words after the program's name into ``tornado.options.options``."""
    if any(re.fullmatch(r"--?help(=.*)?", word) for word in argv):
        print_help(program)
        sys.exit(0)
    try:
        # Tornado prints its whole help before it reports an unknown option: keep it for --help.
        with contextlib.redirect_stderr(io.StringIO()):
            tornado.options.parse_command_line([program, *argv], final=False)
    except (tornado.options.Error, ValueError) as error:
        sys.stderr.write(
            f"{program}: {problem(argv, program, error)} (see: python {program} --help)\n"
        )
        sys.exit(USAGE_ERROR)
    options.run_parse_callbacks()  # sets up logging, on the real standard error


def problem(argv: list[str], program: str, error: Exception) -> str:
    """Say which word of the command line is wrong, and why."""
    if isinstance(error, tornado.options.Error):
        return str(error)  # it names the option already
    for word in argv:  # a value of the wrong type: find the word Tornado choked on
        try:
            tornado.options.parse_command_line([program, word], final=False)
        except ValueError as wrong:
            return f"{word}: {wrong}"
    return str(error)


def print_help(program: str) -> None:
    """Tornado's help, with the names spelled with underscores and paths from the checkout."""
    text = io.StringIO()
    options.print_help(text)
    text = re.sub(
        r"^(  --)([\w-]+)",
        lambda found: found[1] + found[2].replace("-", "_"),
        text.getvalue(),
        flags=re.MULTILINE,
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    text = re.sub(r"^\S*site-packages/", "", text.replace(here, ""), flags=re.MULTILINE)
    sys.stdout.write(text.replace("Usage: " + sys.argv[0], "Usage: python " + program))
