"""
Our pure execution modules (record building, DKIM keys, password checks: no Salt dunders at
import) for the master-side runners. A runner's ``__salt__`` holds runners, not execution
modules, so a runner that shares one's logic loads it by file, in either layout:

- the repository (``module_dirs: [<repo>/salt]``): ``<repo>/_modules/<name>.py``;
- a master with synced extension modules (``salt-run saltutil.sync_all``):
  ``<extension_modules>/modules/<name>.py`` beside ``<extension_modules>/runners``.
"""
import importlib.util
import os
import sys

__virtualname__ = "mailfleet_pure"


def __virtual__():
    return __virtualname__


def candidates(name, near):
    """Where ``name``.py may be, for a caller whose file is ``near`` (a runner's __file__)."""
    out = []
    for base in (os.path.dirname(os.path.abspath(near)), os.path.dirname(os.path.realpath(near))):
        for sub in ("_modules", "modules"):
            path = os.path.normpath(os.path.join(base, "..", sub, f"{name}.py"))
            if path not in out:
                out.append(path)
    return out


def load(name, near):
    """The module ``name``, loaded once per process (kept in sys.modules as
    ``mailfleet_pure_<name>``, apart from Salt's own copy); ImportError names the places
    looked at."""
    key = f"mailfleet_pure_{name}"
    if key in sys.modules:
        return sys.modules[key]
    tried = candidates(name, near)
    for path in tried:
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(key, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[key] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[key]
                raise
            return mod
    raise ImportError(f"{name}.py not found in {', '.join(tried)} (salt-run saltutil.sync_all?)")
