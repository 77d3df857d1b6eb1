"""The API-drift gate: every keyword the course passes to a library, checked against it.

A learner's most common failure with a fine-tuning notebook is a keyword a library release
renamed or removed (SFTTrainer's ``tokenizer``, ``max_seq_length``, ``torch_dtype`` ...).
:func:`check_sources` reads every notebook's code cells (and ``distributed/*.py`` when the
folder exists) with :mod:`ast`, follows the imports, finds each call into one of
:data:`LIBRARIES`, resolves the callable in the *installed* version and checks each keyword
against ``inspect.signature``:

* a keyword the signature names is accepted;
* a callable that takes ``**kwargs`` may consume a keyword in its body: the keyword is
  accepted when the source of the module that defines the callable reads it
  (``kwargs.pop("name"``, ``kwargs.get("name"``, ``kwargs["name"]``, ``"name" in kwargs``);
  configuration dataclasses (``SFTConfig``, ``TrainingArguments``, ``LoraConfig``) have
  every field in their signature already;
* anything else is broken.

Nothing is skipped silently. Each finding has a ``kind``:

``broken``      a keyword the installed callable does not accept (or only swallows in
                ``**kwargs`` that its module never reads by name), or a name the library
                no longer has (an import or an attribute);
``unverified``  a call into a library that could not be checked: the callable could not be
                resolved statically, or a ``**mapping`` is unpacked into it.

Method calls are followed where the receiver's type is known from an assignment in the same
notebook (``trainer = SFTTrainer(...)`` then ``trainer.train(...)``), including the classes
that ``from_pretrained`` of transformers' Auto classes returns. Calls on values of unknown
type (say a helper's return value) are not calls into a library as far as the code shows, and
are counted in the summary.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = (
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "datasets",
    "evaluate",
    "accelerate",
    "sentence_transformers",
    "bm25s",
    "faiss",
)

# What transformers' Auto classes really return: ``from_pretrained`` is forwarded to these,
# so their methods and their ``from_pretrained`` keywords are what must be checked.
AUTO_RETURNS: dict[str, tuple[str, ...]] = {
    "AutoModel": ("transformers.PreTrainedModel",),
    "AutoModelForCausalLM": ("transformers.PreTrainedModel", "transformers.GenerationMixin"),
    "AutoModelForSeq2SeqLM": ("transformers.PreTrainedModel", "transformers.GenerationMixin"),
    "AutoTokenizer": ("transformers.PreTrainedTokenizerBase",),
    "AutoConfig": ("transformers.PretrainedConfig",),
}
# Library functions that hand back the model they were given.
RETURNS_FIRST_ARGUMENT = {
    "peft.prepare_model_for_kbit_training",
    "peft.utils.other.prepare_model_for_kbit_training",
}
# Classes that hand unknown attributes on to another object (``__getattr__``): a method
# missing on the class is looked up on these too. peft's model wraps its tuner (LoraModel).
FORWARDS: dict[str, tuple[str, ...]] = {
    "peft.peft_model.PeftModel": ("peft.tuners.lora.LoraModel", "transformers.PreTrainedModel",
                                  "transformers.GenerationMixin"),
    "peft.peft_model.PeftModelForCausalLM": ("peft.tuners.lora.LoraModel",
                                             "transformers.PreTrainedModel",
                                             "transformers.GenerationMixin"),
}

_KWARG_READ = (
    r"""kwargs\.(?:pop|get)\(\s*["']{name}["']""",
    r"""kwargs\[\s*["']{name}["']\s*\]""",
    r"""["']{name}["']\s+(?:not\s+)?in\s+\w*kwargs""",
)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One call that is broken or could not be checked."""

    source: str  # notebook or file, relative to the course folder
    cell: int | None  # index in the notebook's cells (None for a .py file)
    line: int  # line within the cell (or file)
    call: str  # the callable as written, e.g. "SFTConfig" or "trainer.train"
    resolved: str  # the installed callable's qualified name, or "" if unresolved
    argument: str  # the keyword concerned ("" when the whole call is concerned)
    kind: str  # "broken" or "unverified"
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}" + (f", cell {self.cell}" if self.cell is not None else "")
        arg = f", argument {self.argument!r}" if self.argument else ""
        return f"{where}, line {self.line}: {self.call}(){arg}: {self.kind}: {self.reason}"


# ---------------------------------------------------------------------------------------
# Reading the sources
# ---------------------------------------------------------------------------------------


def _strip_magics(source: str) -> str:
    """Replace IPython magics and shell lines (``!pip``, ``%cd``) by ``pass``, same line count."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("!", "%")):
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines)


def course_sources(root: Path = ROOT) -> list[tuple[str, list[tuple[int | None, str]]]]:
    """Every notebook's code cells ``(cell index, source)`` and every ``distributed/*.py``.

    Returns ``(name, units)`` rows: a notebook's units are its code cells in order (they
    share one namespace), a Python file is one unit with cell ``None``.
    """
    out: list[tuple[str, list[tuple[int | None, str]]]] = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        units: list[tuple[int | None, str]] = []
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                text = cell["source"]
                units.append((index, "".join(text) if isinstance(text, list) else text))
        out.append((path.relative_to(root).as_posix(), units))
    for path in sorted((root / "distributed").glob("*.py")):
        out.append((path.relative_to(root).as_posix(), [(None, path.read_text())]))
    return out


# ---------------------------------------------------------------------------------------
# Resolving callables
# ---------------------------------------------------------------------------------------

_MISSING = object()


def _import_path(dotted: str) -> Any:
    """The object at ``dotted`` (``package.module.attr.attr``), or ``_MISSING``."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - a library failing to import is itself a finding
            return _MISSING
        for attr in parts[split:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    return f"{module}.{name}" if module else name


@cache
def _module_text(module_name: str) -> str:
    module = sys.modules.get(module_name)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return ""


def _reads_kwarg(func: Any, name: str) -> bool:
    """Whether the module defining ``func`` reads ``name`` out of a ``**kwargs`` mapping."""
    target = inspect.unwrap(getattr(func, "__func__", func))
    text = _module_text(getattr(target, "__module__", "") or "")
    return any(re.search(p.format(name=re.escape(name)), text) for p in _KWARG_READ)


def _signature_target(obj: Any) -> Any:
    """The function whose signature a call of ``obj`` binds (a class: its ``__init__``)."""
    if inspect.isclass(obj):
        return obj.__init__ if "__init__" in vars(obj) or not dataclasses.is_dataclass(obj) else obj
    return obj


def check_keywords(obj: Any, keywords: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Check keywords against a callable: ``{keyword: (kind, reason)}`` for each not accepted.

    ``kind`` is ``"broken"`` when the signature has no such parameter and either no
    ``**kwargs`` or a ``**kwargs`` that the callable's module never reads by that name
    (``BitsAndBytesConfig`` logs and ignores an unknown keyword: a silent bug), and
    ``"unverified"`` when there is no signature to check against.
    """
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError) as error:
        return {k: ("unverified", f"no signature: {error}") for k in keywords}
    params = signature.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    out = {}
    for key in keywords:
        param = params.get(key)
        if param is not None and param.kind not in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            continue
        if key in fields:
            continue
        if not var_kw:
            out[key] = ("broken", f"{_qualname(obj)} has no parameter {key!r}")
        elif not _reads_kwarg(_signature_target(obj), key):
            out[key] = (
                "broken",
                f"{_qualname(obj)} only takes it in **kwargs, and its module never reads it "
                "by name: it is ignored or rejected",
            )
    return out


# ---------------------------------------------------------------------------------------
# Walking the code
# ---------------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Walker(ast.NodeVisitor):
    """Visits one source's units in order, tracking imports and the types of variables."""

    def __init__(self, source_name: str) -> None:
        self.source_name = source_name
        self.imports: dict[str, str] = {}  # local name -> dotted path in a library
        self.types: dict[str, tuple[str, ...]] = {}  # variable -> library classes (dotted)
        self.cell: int | None = None
        self.findings: list[Finding] = []
        self.checked: list[tuple[str, str]] = []  # (call as written, resolved)
        self.unknown_receivers = 0
        self.other_imports: set[str] = set()  # names bound to other modules (np, plt, ...)

    # -- imports -----------------------------------------------------------------------
    def _is_library(self, dotted: str) -> bool:
        return dotted.split(".")[0] in LIBRARIES

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._is_library(alias.name):
                local = alias.asname or alias.name.split(".")[0]
                self.imports[local] = alias.name if alias.asname else alias.name.split(".")[0]
                if _import_path(alias.name) is _MISSING:
                    self._finding(node, f"import {alias.name}", "", "", "broken",
                                  f"{alias.name} cannot be imported")
            else:
                self.imports.pop(alias.asname or alias.name.split(".")[0], None)
                self.other_imports.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            local = alias.asname or alias.name
            if node.level == 0 and self._is_library(module):
                dotted = f"{module}.{alias.name}"
                self.imports[local] = dotted
                if _import_path(dotted) is _MISSING:
                    self._finding(node, f"from {module} import {alias.name}", "", "", "broken",
                                  f"{module} has no {alias.name!r}")
            else:
                self.imports.pop(local, None)
                self.types.pop(local, None)
                self.other_imports.add(local)

    # -- types of variables -------------------------------------------------------------
    def _call_types(self, node: ast.Call) -> tuple[str, ...]:
        """The library classes a call returns, when the code shows it."""
        written = _dotted(node.func)
        if written is None:
            return ()
        head, _, rest = written.partition(".")
        if head in self.imports:
            dotted = self.imports[head] + (f".{rest}" if rest else "")
            obj = _import_path(dotted)
            if obj is _MISSING:
                return ()
            if inspect.isclass(obj):
                return (_qualname(obj),)
            if _qualname(obj) in RETURNS_FIRST_ARGUMENT or dotted in RETURNS_FIRST_ARGUMENT:
                if node.args and isinstance(node.args[0], ast.Name):
                    return self.types.get(node.args[0].id, ())
                return ()
            owner = getattr(obj, "__self__", None)  # a classmethod bound to its class
            if inspect.isclass(owner) and getattr(obj, "__name__", "").startswith("from_"):
                if owner.__name__ in AUTO_RETURNS:
                    return AUTO_RETURNS[owner.__name__]
                return (_qualname(owner),)
            annotation = inspect.signature(obj).return_annotation if callable(obj) else None
            if inspect.isclass(annotation) and self._is_library(annotation.__module__):
                return (_qualname(annotation),)
            text = str(annotation)
            first = re.match(r"^([A-Za-z_][\w.]*)\s*\|", text)  # "PeftModel | PeftMixedModel"
            if first:
                candidate = getattr(sys.modules.get(obj.__module__), first.group(1), None)
                if inspect.isclass(candidate):
                    return (_qualname(candidate),)
            return ()
        return ()  # a method of an instance: its return type is not followed

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        types = self._call_types(node.value) if isinstance(node.value, ast.Call) else ()
        for target in node.targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    self.types.pop(name.id, None)
                    self.imports.pop(name.id, None)
            if isinstance(target, ast.Name) and types:
                self.types[target.id] = types
            elif not isinstance(target, ast.Name):
                self.visit(target)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        saved = dict(self.types)
        for arg in node.args.args + node.args.kwonlyargs:
            self.types.pop(arg.arg, None)  # parameters shadow the notebook's variables
        self.generic_visit(node)
        self.types = saved

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    # -- calls ---------------------------------------------------------------------------
    def _finding(self, node, call, resolved, argument, kind, reason) -> None:
        self.findings.append(
            Finding(self.source_name, self.cell, getattr(node, "lineno", 0), call, resolved,
                    argument, kind, reason)
        )

    def _resolve(self, written: str) -> tuple[Any, str] | None:
        """``(callable, resolved name)`` for a call into a library; None if it is not one."""
        head, _, rest = written.partition(".")
        if head in self.imports:
            dotted = self.imports[head] + (f".{rest}" if rest else "")
            obj = _import_path(dotted)
            if obj is not _MISSING:
                owner = getattr(obj, "__self__", None)
                if inspect.isclass(owner) and owner.__name__ in AUTO_RETURNS:
                    target = _import_path(AUTO_RETURNS[owner.__name__][0])
                    obj = getattr(target, obj.__name__, obj)  # Auto* forwards to this one
                return obj, _qualname(obj)
            return _MISSING, dotted
        if head in self.types and rest and "." not in rest:
            classes = [c for t in self.types[head] for c in (t, *FORWARDS.get(t, ()))]
            for cls_name in classes:
                cls = _import_path(cls_name)
                method = getattr(cls, rest, _MISSING) if cls is not _MISSING else _MISSING
                if method is not _MISSING:
                    return method, _qualname(method)
            return _MISSING, f"{'/'.join(self.types[head])}.{rest}"
        return None

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        written = _dotted(node.func)
        if written is None:
            return
        head = written.split(".")[0]
        if head in dir(builtins) and head not in self.imports:
            return
        resolved = self._resolve(written)
        if resolved is None:
            if "." in written and written.partition(".")[0] not in self.other_imports:
                self.unknown_receivers += 1
            return
        obj, name = resolved
        if obj is _MISSING:
            kind = "broken" if written.partition(".")[0] in self.imports else "unverified"
            self._finding(node, written, "", "", kind, f"{name} not found in the installed library")
            return
        self.checked.append((written, name))
        keywords = [k.arg for k in node.keywords if k.arg is not None]
        for key, (kind, reason) in check_keywords(obj, keywords).items():
            self._finding(node, written, name, key, kind, reason)
        for k in node.keywords:
            if k.arg is None:
                self._finding(node, written, name, f"**{ast.unparse(k.value)}", "unverified",
                              "keywords unpacked from a mapping cannot be checked statically")


def check_sources(
    sources: list[tuple[str, list[tuple[int | None, str]]]] | None = None,
) -> dict[str, Any]:
    """Check every call into :data:`LIBRARIES` in the course's code (or in ``sources``).

    Returns ``{"findings": [Finding, ...], "checked": n calls checked, "unknown_receivers":
    n method calls on values of unknown type, "unparsable": [(source, cell, error)]}``.
    """
    sources = course_sources() if sources is None else sources
    findings: list[Finding] = []
    unparsable = []
    checked = unknown = 0
    for name, units in sources:
        walker = _Walker(name)
        for cell, text in units:
            walker.cell = cell
            try:
                tree = ast.parse(_strip_magics(text))
            except SyntaxError as error:
                unparsable.append((name, cell, str(error)))
                findings.append(Finding(name, cell, error.lineno or 0, "", "", "", "unverified",
                                        f"the code does not parse: {error.msg}"))
                continue
            walker.visit(tree)
        findings += walker.findings
        checked += len(walker.checked)
        unknown += walker.unknown_receivers
    return {"findings": findings, "checked": checked, "unknown_receivers": unknown,
            "unparsable": unparsable}


def versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (``"missing"`` for one not installed)."""
    from importlib import metadata

    dists = {"sentence_transformers": "sentence-transformers", "faiss": "faiss-cpu"}
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(dists.get(lib, lib))
        except metadata.PackageNotFoundError:
            out[lib] = "missing"
    return out


def main() -> int:
    """Print the report; exit 1 if anything is broken (``python -m helpers.api_drift``)."""
    result = check_sources()
    print("libraries:", ", ".join(f"{k} {v}" for k, v in versions().items()))
    broken = [f for f in result["findings"] if f.kind == "broken"]
    unverified = [f for f in result["findings"] if f.kind == "unverified"]
    print(f"{result['checked']} calls into the libraries checked; "
          f"{result['unknown_receivers']} method calls on values of unknown type not checked")
    for title, rows in (("BROKEN", broken), ("UNVERIFIED", unverified)):
        print(f"{title}: {len(rows)}")
        for finding in rows:
            print(f"  {finding}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
