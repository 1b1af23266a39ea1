"""`llamactl init`: a new deployment folder from one of the templates shipped with llamactl.

Works offline: the templates are inside the package. Asks only when a person is at a terminal;
otherwise it uses the flags and the defaults. It writes into a hidden folder next to the target
and moves the result into place at the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llamactl.cli.common import Output, emit_json, fail, output_option, say, table
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from llamactl.templates import Template

__all__ = ["init"]

DEFAULT_TEMPLATE = "basic"
LIST_HINT = "see the templates with `llamactl init --list`"
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def init(
    *,
    directory: Path | None = typer.Argument(
        None,
        metavar="DIR",
        help="Folder to create (or an empty one to fill).  [default: the template's name]",
        show_default=False,
    ),
    template: str | None = typer.Option(
        None, "--template", "-t", metavar="NAME", help=f"The template.  [default: {DEFAULT_TEMPLATE}]"
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        "-n",
        metavar="NAME",
        help="The deployment's name: letters, digits, '-', '_' and '.'.  [default: from DIR]",
    ),
    list_templates: bool = typer.Option(False, "--list", help="List the templates and exit."),
    force: bool = typer.Option(
        False, "--force", help="Write into DIR even if it is not empty (files of the same name are replaced)."
    ),
    no_git: bool = typer.Option(False, "--no-git", help="Do not run `git init` in the new folder."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Ask nothing: use the flags and the defaults."),
    output: Output = output_option(),
) -> None:
    """Create a deployment folder from a template: deployment.yml, src/, tests/, README.md.

    Examples: `llamactl init my-app`, `llamactl init --template streaming --name progress --yes`,
    `llamactl init --list`. Then `cd my-app && llamactl serve deployment.yml`.
    """
    from llamactl.templates import TemplateNotFound, find_template
    from llamactl.templates import list_templates as all_templates

    if list_templates:
        _print_templates(all_templates(), output)
        return
    ask = not yes and _interactive()
    chosen = template or (_ask_template(all_templates()) if ask else DEFAULT_TEMPLATE)
    try:
        found = find_template(chosen)
    except TemplateNotFound as exc:
        fail(str(exc), LIST_HINT, ExitCode.USAGE)
    if directory is None:
        default_dir = name or found.name
        directory = Path(typer.prompt("Folder", default=default_dir) if ask else default_dir)
    target = directory.expanduser().absolute()
    if name is None:
        derived = _name_from(target, found.name)
        name = _ask_name(derived) if ask else derived
    problem = _name_problem(name)
    if problem:
        fail(problem, "pass another --name", ExitCode.USAGE)
    _check_target(target, force)
    _generate(found, target, name)
    say(f"Created {_shown(target)} from the '{found.name}' template (deployment '{name}').")
    if not no_git:
        _git_init(target)
    _print_next(found, target)


def _interactive() -> bool:
    """A person at a terminal: both ends are TTYs, and neither CI nor a dumb terminal says otherwise."""
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdin.isatty() and sys.stdout.isatty()


def _print_templates(templates: list[Template], output: Output) -> None:
    if output is Output.JSON:
        emit_json(
            [{"name": t.name, "description": t.description, "next": list(t.next_commands)} for t in templates]
        )
        return
    table(["TEMPLATE", "DESCRIPTION"], [(t.name, t.description) for t in templates])


def _ask_template(templates: list[Template]) -> str:
    names = [t.name for t in templates]
    for number, t in enumerate(templates, start=1):
        say(f"  {number}. {t.name}: {t.description}")
    while True:
        answer = str(typer.prompt("Template (number or name)", default=DEFAULT_TEMPLATE)).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]
        if answer in names:
            return answer
        say(f"'{answer}' is not a template: type a number from 1 to {len(names)} or one of the names.")


def _name_from(target: Path, fallback: str) -> str:
    """The folder's name made a valid deployment name (`My App` -> `My-App`), else ``fallback``."""
    cleaned = _NOT_NAME_CHARS.sub("-", target.name).strip("-.")
    return cleaned if cleaned and not _name_problem(cleaned) else fallback


def _ask_name(default: str) -> str:
    while True:
        answer = str(typer.prompt("Deployment name", default=default)).strip()
        problem = _name_problem(answer)
        if not problem:
            return answer
        say(problem)


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a deployment name (the check `llamactl.server.config` applies), or None."""
    from pydantic import TypeAdapter, ValidationError

    from llamactl.server.config.fields import Identifier

    try:
        TypeAdapter(Identifier).validate_python(name)
    except ValidationError as exc:
        detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
        return f"invalid deployment name: {detail}"
    return None


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        fail(f"{_shown(target)} is a file", "pass the path of a new or an empty folder", ExitCode.USAGE)
    if not target.is_dir() or force:
        return
    entries = sorted(p.name for p in target.iterdir())
    if entries:
        listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        fail(
            f"{_shown(target)} is not empty (it holds {listed})",
            "pick a new folder, or pass --force to write the template's files into this one",
            ExitCode.NOT_EMPTY,
        )


def _generate(template: Template, target: Path, name: str) -> None:
    """Render into a hidden folder next to ``target``, check it, then move it into place."""
    from llamactl.server.config import load_deployment_file
    from llamactl.server.errors import DeploymentConfigError
    from llamactl.templates import DEPLOYMENT_FILE, write_template

    created_parent = _first_missing(target.parent)
    moved: list[Path] = []
    made: list[Path] = []
    replaced: list[tuple[Path, Path]] = []
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.init-{secrets.token_hex(4)}"
        staging.mkdir()  # not mkdtemp: its 0700 mode would become the new folder's
        files = write_template(template, staging, name)
        load_deployment_file(staging / DEPLOYMENT_FILE)
        if not target.exists():
            staging.rename(target)
            staging = None
            return
        # What --force replaces is kept here until every file is in place, to be put back on failure.
        saved = staging / ".replaced"
        for relative in files:
            destination = target / relative
            missing = _first_missing(destination.parent)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if missing is not None:
                made.append(missing)
            if destination.is_file() or destination.is_symlink():
                kept = saved / relative
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(destination, kept)
                replaced.append((kept, destination))
            else:
                moved.append(destination)
            os.replace(staging / relative, destination)
    except (OSError, DeploymentConfigError) as exc:
        for path in reversed(moved):
            path.unlink(missing_ok=True)
        for kept, destination in reversed(replaced):
            os.replace(kept, destination)
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)
        if created_parent is not None:
            shutil.rmtree(created_parent, ignore_errors=True)
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else exc
        fail(
            f"could not create {_shown(target)}: {detail}",
            "check that the folder is writable, then run the command again",
            ExitCode.ERROR,
        )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _first_missing(folder: Path) -> Path | None:
    """The outermost ancestor of ``folder`` (or itself) that does not exist yet, if any."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _git_init(target: Path) -> None:
    git = shutil.which("git")
    if git is None:
        say("git is not installed: no repository was created.")
        return
    inside = subprocess.run(
        [git, "rev-parse", "--is-inside-work-tree"], cwd=target, capture_output=True, text=True, check=False
    )
    if inside.returncode == 0 and inside.stdout.strip() == "true":
        say("Already inside a git repository: no new one was created.")
        return
    done = subprocess.run([git, "init", "-q"], cwd=target, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        say(f"Warning: `git init` failed: {done.stderr.strip()} (the folder is ready without it).")
        return
    say("Initialized a git repository.")


def _shown(target: Path) -> str:
    """``target`` relative to the current folder when it is inside it, else absolute."""
    try:
        relative = target.relative_to(Path.cwd())
    except ValueError:
        return str(target)
    return str(relative) if relative.parts else "."


def _print_next(template: Template, target: Path) -> None:
    shown = _shown(target)
    cd = "" if shown == "." else f"cd {shlex.quote(shown)} && "
    say("Next: start the server, then run a task from another terminal:")
    for line in [f"{cd}llamactl serve deployment.yml", *template.next_commands]:
        typer.echo(f"  {line}")
