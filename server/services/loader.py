"""Import a service's target (``module:attr``) from its source folder.

Accepted import paths: ``module:attr``, ``pkg.module:attr`` and ``sub/dir/module:attr`` (``sub/dir``
is put on ``sys.path`` too, ahead of the source folder); ``attr`` may be dotted (``App.workflow``)
and the module may end in ``.py``. Every failure is a :class:`WorkflowLoadError` whose message
names the service source, the import path and the cause.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path, PurePosixPath

from llamactl.server.errors import WorkflowLoadError

from .errorinfo import error_line, frame_locations

__all__ = ["load_target", "parse_import_path"]

_MAX_LISTED_NAMES = 25
_OURS = __name__.split(".", maxsplit=1)[0]


def parse_import_path(import_path: str) -> tuple[PurePosixPath, str, str]:
    """Split ``sub/dir/module:attr`` into ``(sub/dir, module, attr)``; raise ValueError if malformed."""
    module_part, sep, attr = import_path.strip().partition(":")
    if not sep or not module_part or not attr:
        raise ValueError("expected 'module:attr' (e.g. 'workflow:my_workflow' or 'src/app.flows:wf')")
    path = PurePosixPath(module_part.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ValueError("the module must be inside the service source (no absolute paths, no '..')")
    module = path.name.removesuffix(".py")
    if not module or any(not p.isidentifier() for p in module.split(".")):
        raise ValueError(f"{module!r} is not a module name")
    if any(not p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{attr!r} is not an attribute name")
    return path.parent, module, attr


def _put_first_on_sys_path(*folders: Path) -> None:
    for folder in reversed(folders):
        entry = str(folder)
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _forget_foreign_module(module: str, roots: tuple[Path, ...]) -> None:
    """Drop an already-imported module of the same top-level name that lives elsewhere.

    Two services (or two generations of one service) may both call their module ``workflow``; the
    one in ``sys.modules`` must not shadow the one in this source folder.
    """
    top = module.split(".", maxsplit=1)[0]
    cached = sys.modules.get(top)
    if cached is None:
        return
    if top == _OURS:
        # The worker still imports modules of ours after this (adapt imports workflow_runs):
        # with our package taken out of sys.modules for the user's, each such import fails.
        raise WorkflowLoadError(
            f"the module name {top!r} is llamactl's own: rename {top}.py (or the {top} folder) in the "
            "service source"
        )
    origin = getattr(cached, "__file__", None)
    if origin is not None and any(Path(origin).resolve().is_relative_to(r) for r in roots):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _public_names(obj: object) -> list[str]:
    """Public names of ``obj``, leaving out what a module merely imported (modules, foreign classes)."""
    public = sorted(n for n in dir(obj) if not n.startswith("_"))
    if not isinstance(obj, types.ModuleType):
        return public
    own = [
        n
        for n in public
        if not isinstance(value := getattr(obj, n), types.ModuleType)
        and getattr(value, "__module__", obj.__name__) == obj.__name__
    ]
    return own or public


def load_target(source_dir: Path, import_path: str) -> object:
    """Import ``import_path`` relative to ``source_dir`` and return the named attribute."""
    source = Path(source_dir).resolve()
    where = f"service source {str(source)!r}, import path {import_path!r}"
    try:
        subdir, module, attr = parse_import_path(import_path)
    except ValueError as exc:
        raise WorkflowLoadError(f"{where}: {exc}") from None
    folder = (source / subdir).resolve()
    if not folder.is_relative_to(source):
        raise WorkflowLoadError(f"{where}: the module must be inside the service source")
    if not source.is_dir():
        raise WorkflowLoadError(f"{where}: the source folder does not exist")
    roots = (source, folder)
    try:
        _forget_foreign_module(module, roots)
    except WorkflowLoadError as exc:
        raise WorkflowLoadError(f"{where}: {exc}") from None
    _put_first_on_sys_path(folder, source)
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module(module)
    except SyntaxError as exc:
        raise WorkflowLoadError(
            f"{where}: syntax error in {exc.filename} line {exc.lineno}: {exc.msg}"
        ) from exc
    except ModuleNotFoundError as exc:
        if exc.name and (module + ".").startswith(exc.name + "."):
            looked = ", ".join(dict.fromkeys(str(r) for r in (folder, source)))
            msg = f"module {module!r} not found (looked in {looked})"
        else:
            msg = f"importing {module!r} failed: it imports {exc.name!r}, which is not installed"
            if locations := frame_locations(exc):
                msg += f" (at {locations})"
        raise WorkflowLoadError(f"{where}: {msg}") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        at = frame_locations(exc)
        raise WorkflowLoadError(
            f"{where}: importing {module!r} raised {error_line(exc)}" + (f" (at {at})" if at else "")
        ) from exc
    target: object = mod
    walked: list[str] = []
    for name in attr.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            owner = f"module {module!r}" + (f" attribute {'.'.join(walked)!r}" if walked else "")
            names = _public_names(target)
            shown = ", ".join(names[:_MAX_LISTED_NAMES]) + (", ..." if len(names) > _MAX_LISTED_NAMES else "")
            file = getattr(mod, "__file__", None)
            raise WorkflowLoadError(
                f"{where}: {owner}{f' ({file})' if file and not walked else ''} has no attribute "
                f"{name!r}; it defines: {shown or '(nothing public)'}"
            ) from None
        walked.append(name)
    return target
