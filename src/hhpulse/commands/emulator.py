"""``hhpulse emulator``: serve the SYNTHETIC hh.ru API emulator for manual use."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind [%(default)s]")
    p.add_argument("--port", type=int, default=8765, help="port [%(default)s]")
    p.add_argument("--day", type=int, default=60, help="simulated market day [%(default)s]")
    p.add_argument("--size", type=int, default=150, help="vacancies opened per simulated day [%(default)s]")
    p.add_argument("--seed", type=int, default=7, help="market seed [%(default)s]")


def run(args: argparse.Namespace) -> int:
    from hhpulse.hh.emulator import Emulator
    from hhpulse.hh.market import Market

    emu = Emulator(Market(seed=args.seed, daily_new=args.size), day=args.day, host=args.host, port=args.port)
    print(
        f"SYNTHETIC hh.ru emulator on {emu.url} (day {args.day}); try: curl -H 'HH-User-Agent: me' '{emu.url}/vacancies?text=python'"
    )
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.httpd.server_close()
    return 0
