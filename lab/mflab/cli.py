"""labctl: build-image [--release R] | up | down | add HOST [--release R] | remove HOST | status [--json] | exec HOST -- CMD... | demo"""
import argparse
import os
import sys

from . import config, fleet, image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labctl", description="the mailfleet lab fleet")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build-image", help="build (or reuse) the cached base image of a release")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--release", default=config.DEFAULT_RELEASE, choices=sorted(config.RELEASES),
                       help=f"Debian release (default {config.DEFAULT_RELEASE})")
    sub.add_parser("up", help="boot the lab (idempotent)")
    sub.add_parser("down", help="stop everything the lab started and remove its traces")
    add = sub.add_parser("add", help="boot one more mail host into the running lab")
    add.add_argument("host", help="mail03 .. mail80")
    add.add_argument("--release", default=config.DEFAULT_RELEASE, choices=sorted(config.RELEASES))
    rm = sub.add_parser("remove", help="take a host added with `add` out of the lab again")
    rm.add_argument("host")
    st = sub.add_parser("status", help="one line per host; exit 1 unless all are running")
    st.add_argument("--json", action="store_true")
    ex = sub.add_parser("exec", help="run a command inside a lab host")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("demo", help="bring the lab up and show every host answering")
    args = parser.parse_args(argv)

    if args.cmd == "build-image":
        fleet.preflight(need_debootstrap=True, suites=(args.release,))
        image.build(args.release, force=args.force)
    elif args.cmd == "up":
        fleet.up()
    elif args.cmd == "down":
        if os.geteuid() != 0:
            raise SystemExit("lab: must run as root")
        fleet.down()
    elif args.cmd == "add":
        fleet.add(args.host, args.release)
    elif args.cmd == "remove":
        fleet.remove(args.host)
    elif args.cmd == "status":
        return fleet.status(as_json=args.json)
    elif args.cmd == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("exec needs a command: labctl exec HOST -- CMD...")
        os.execvp("nsenter", fleet.guest_argv(fleet.host_pid(args.host), command))
    elif args.cmd == "demo":
        from . import demo
        return demo.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
