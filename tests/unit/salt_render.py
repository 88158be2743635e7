"""
Render the mail formula in-process through Salt's own loader, without a master, a minion
daemon or the lab: ``file_client: local`` over this repository's salt/ and pillar/ trees.

    r = SaltRender(tmp_path, grains=FREEBSD_GRAINS, pillar={"mailfleet": {...}})
    high = r.show_sls("mail")               # state.show_sls: Jinja + YAML, nothing runs
    for chunk in r.file_templates(high):     # every file.managed with template: jinja
        text = r.render_file(chunk)          # file.get_managed, exactly as the state does

Grains are given whole (nothing is read from this machine), so a FreeBSD render on this
Debian machine sees only FreeBSD grains. Pillar is compiled from pillar/ with the usual
top file for the minion id, plus an optional override (as ``pillar=`` on the CLI).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import salt.config
import salt.loader
import salt.pillar
import salt.utils.files

REPO = Path(__file__).resolve().parents[2]
MINION_ID = "mail01.lab.test"
_MISSING_SLS = "is not available on the salt master"

_COMMON_GRAINS = {
    "id": MINION_ID,
    "fqdn": MINION_ID,
    "host": "mail01",
    "domain": "lab.test",
    "nodename": "mail01",
    "localhost": "mail01",
    "cpuarch": "amd64",
    "num_cpus": 2,
    "saltversion": "3008.4",
    "saltversioninfo": [3008, 4],
    "pythonversion": [3, 11, 2, "final", 0],
    "ipv4": ["127.0.0.1", "198.18.0.11"],
    "ipv6": ["::1"],
}

# What a FreeBSD 14 minion reports (salt/grains/core.py) for the keys states and
# modules look at.
FREEBSD_GRAINS = dict(
    _COMMON_GRAINS,
    os="FreeBSD",
    os_family="FreeBSD",
    kernel="FreeBSD",
    kernelrelease="14.2-RELEASE",
    osrelease="14.2-RELEASE",
    osrelease_info=[14, 2],
    osmajorrelease=14,
    osfullname="FreeBSD",
    osfinger="FreeBSD-14",
    osarch="amd64",
    init="unknown",
    ps="ps auxwww",
)

DEBIAN_GRAINS = dict(
    _COMMON_GRAINS,
    cpuarch="x86_64",
    os="Debian",
    os_family="Debian",
    kernel="Linux",
    kernelrelease="6.1.0-28-amd64",
    osrelease="12",
    osrelease_info=[12],
    osmajorrelease=12,
    oscodename="bookworm",
    osfullname="Debian GNU/Linux",
    osfinger="Debian-12",
    osarch="amd64",
    init="systemd",
    ps="ps -efHww",
)

# Debian 13 (trixie), the keys that differ from Debian 12.
DEBIAN13_GRAINS = dict(DEBIAN_GRAINS, kernelrelease="6.12.48+deb13-amd64", osrelease="13", osrelease_info=[13],
                       osmajorrelease=13, oscodename="trixie", osfinger="Debian-13")

_SYNCED = {}  # the session's synced extension_modules directory


class SaltRender:
    """One minion's view of the state tree: opts, pillar and execution modules."""

    def __init__(self, workdir, grains, pillar=None, minion_id=MINION_ID,
                 file_roots=None, pillar_roots=None, sync=True):
        workdir = Path(workdir)
        cachedir = workdir / "cache"
        cachedir.mkdir(parents=True, exist_ok=True)
        # minion_config(None) reads no file: Salt's defaults only, nothing from /etc/salt.
        opts = salt.config.minion_config(None)
        opts.update({
            "id": minion_id,
            "file_client": "local",
            "master_type": "disable",
            "file_roots": {"base": [str(p) for p in (file_roots or [REPO / "salt"])]},
            "pillar_roots": {"base": [str(p) for p in (pillar_roots or [REPO / "pillar"])]},
            "state_top": "top.sls",
            "saltenv": "base",
            "pillarenv": None,
            "cachedir": str(cachedir),
            "extension_modules": str(cachedir / "extmods"),
            "pki_dir": str(workdir / "pki"),
            "sock_dir": str(workdir / "sock"),
            "log_file": str(workdir / "minion.log"),
            "conf_file": str(workdir / "minion"),
            "grains_cache": False,
            "grains": copy.deepcopy(grains),
            "autoload_dynamic_modules": False,
            "state_events": False,
            "test": False,
        })
        self.opts = opts
        self.pillar_override = copy.deepcopy(pillar) if pillar else None
        self.pillar = salt.pillar.get_pillar(
            opts, opts["grains"], minion_id, saltenv="base",
            pillar_override=self.pillar_override,
        ).compile_pillar()
        opts["pillar"] = self.pillar
        # A pillar SLS named in top.sls but not (yet) in the tree is tolerated, since the
        # test supplies what it needs by override; any other pillar error fails the render.
        errors = self.pillar.get("_errors") or []
        self.missing_pillar_sls = [e for e in errors if _MISSING_SLS in e]
        self.pillar_errors = [e for e in errors if _MISSING_SLS not in e]
        if self.pillar_errors:
            raise AssertionError("pillar failed to render:\n" + "\n".join(self.pillar_errors))
        self.utils = salt.loader.utils(opts)
        self.salt = salt.loader.minion_mods(opts, utils=self.utils)
        if sync:
            # Our extension modules, as a minion has them at a highstate (it syncs first).
            # Synced once per test session; later renders load the same copy.
            if _SYNCED.get("dir"):
                opts["extension_modules"] = _SYNCED["dir"]
            else:
                for kind in ("utils", "modules", "states"):
                    self.salt[f"saltutil.sync_{kind}"]()
                _SYNCED["dir"] = opts["extension_modules"]
            self.utils = salt.loader.utils(opts)
            self.salt = salt.loader.minion_mods(opts, utils=self.utils)

    def run_state(self, high, sid):
        """Run the one state ``sid`` of ``high`` as the state system would (its arguments as
        compiled, this render's pillar); returns its result dict. For checks only: a state
        that changes the machine is not run here."""
        import salt.loader
        (fun_mod, body), = [(k, v) for k, v in high[sid].items() if not k.startswith("__")]
        fun, args = next(a for a in body if isinstance(a, str)), {}
        for arg in body:
            if isinstance(arg, dict):
                args.update(arg)
        args.pop("failhard", None)
        args.pop("order", None)
        states = salt.loader.states(self.opts, self.salt, self.utils, {})
        return states[f"{fun_mod}.{fun}"](name=args.pop("name", sid), **args)

    def show_sls(self, mods):
        """``state.show_sls``: the compiled high data; raises on a render error."""
        kwargs = {"pillar": self.pillar_override} if self.pillar_override else {}
        if self.missing_pillar_sls:
            kwargs["force"] = True  # skip the _errors check: only missing SLS, see __init__
        high = self.salt["state.show_sls"](mods, **kwargs)
        if isinstance(high, list):  # Salt returns render/compile errors as a list
            raise AssertionError("state.show_sls %s failed:\n%s" % (mods, "\n".join(high)))
        return high

    @staticmethod
    def chunks(high):
        """Flatten high data into (id, module, function, {arg: value}) tuples."""
        out = []
        for sid, body in high.items():
            for module, items in body.items():
                if module.startswith("__"):
                    continue
                fun, args = None, {}
                for item in items:
                    if isinstance(item, str):
                        fun = item
                    elif isinstance(item, dict):
                        args.update(item)
                args.setdefault("name", sid)
                out.append((sid, module, fun, args))
        return out

    def file_templates(self, high):
        """Every ``file.managed`` whose source is rendered with Jinja."""
        return [c for c in self.chunks(high)
                if c[1] == "file" and c[2] == "managed" and c[3].get("template") == "jinja"]

    def render_file(self, chunk):
        """Render one file.managed template the way the state does (file.get_managed)."""
        _sid, _mod, _fun, args = chunk
        sfn, _sum, comment = self.salt["file.get_managed"](
            name=args["name"], template=args["template"], source=args["source"],
            source_hash=args.get("source_hash", ""), source_hash_name=None,
            user=args.get("user"), group=args.get("group"), mode=args.get("mode"),
            attrs=None, saltenv="base", context=args.get("context"),
            defaults=args.get("defaults"), skip_verify=False,
        )
        if comment or not sfn:
            raise AssertionError(f"{args['name']}: template did not render: {comment}")
        try:
            with salt.utils.files.fopen(sfn, "r") as fh:
                return fh.read()
        finally:
            # The rendered copy is a temporary file; the cached source stays in cachedir.
            if not sfn.startswith(self.opts["cachedir"]) and os.path.exists(sfn):
                os.unlink(sfn)

    def render_all(self, high):
        """{destination path: rendered text} for every templated file in ``high``."""
        return {c[3]["name"]: self.render_file(c) for c in self.file_templates(high)}

    def render_source(self, source, context, name="/nonexistent/render-test"):
        """Render one salt:// template with a given context (no state needed)."""
        return self.render_file(("render", "file", "managed", {
            "name": name, "source": source, "template": "jinja", "context": context}))
